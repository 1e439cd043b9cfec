//! Several gateways on one PostgreSQL store (issue 22): what one instance registers or removes
//! reaches the others through NOTIFY, tokens are signed with one shared secret, an outage of the
//! database leaves calls working and refuses writes clearly, a newer schema is refused, and the
//! database password never shows. Each test runs its own PostgreSQL ([`common::postgres`]).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clients::{Streamable, http};
use common::plain::json_of;
use common::postgres::{PASSWORD, Postgres};
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

/// A gateway without auth on `store`, in a directory of its own.
fn gateway(store: &str) -> (Dir, Gateway) {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth", "--store", store]);
    (dir, gw)
}

/// A session on `gw`'s `/mcp`, with `bearer` if given.
fn open(
    rt: &tokio::runtime::Runtime,
    gw: &Gateway,
    bearer: Option<&str>,
) -> anyhow::Result<Streamable> {
    rt.block_on(Streamable::open(
        http(None),
        &format!("http://{}/mcp", gw.addr),
        bearer,
    ))
}

/// Write registrations of the fixture at `base` straight into the store, named by the `name`
/// expression over `from` (a `FROM` clause, or none for one row), with the stored health
/// `status`, without the notice a gateway's write sends.
fn insert_rows(pg: &Postgres, name: &str, from: &str, base: &str, status: &str) {
    pg.sql(&format!(
        "INSERT INTO registrations (name, url, transport, tls, auth, enabled, created_at, \
         updated_at, health_status, health_since, health_consecutive_failures) \
         SELECT {name}, '{base}/mcp', 'streamable-http', '{{}}', \
         '{{\"bearer\":null,\"headers\":[]}}', TRUE, 0, 0, '{status}', 0, 0 {from}"
    ));
}

/// A TCP listener that accepts connections and never answers on them: an upstream whose check
/// lasts the whole request timeout. Counts the connections it took.
struct Silent {
    base: String,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        // Ends with the test process; the connections are held open, never read.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        });
        Self { base, accepted }
    }
}

/// An HTTP server that answers every request 503 and closes: an upstream that is down, whose
/// requests are counted by the URL's query (`/mcp?u=N`).
struct Refusing {
    base: String,
    requests: Arc<Mutex<HashMap<String, u64>>>,
}

impl Refusing {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let counted = requests.clone();
        // Ends with the test process.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counted = counted.clone();
                std::thread::spawn(move || refuse(conn, &counted));
            }
        });
        Self { base, requests }
    }
}

/// Read one request from `conn` (head and body), count it, answer 503 and close.
fn refuse(mut conn: std::net::TcpStream, counted: &Mutex<HashMap<String, u64>>) {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let query = line
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.split_once('?'));
    let query = query.map(|(_, q)| q.to_owned()).unwrap_or_default();
    let mut length = 0;
    let mut header = String::new();
    while reader.read_line(&mut header).unwrap_or(0) > 0 && !header.trim().is_empty() {
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        header.clear();
    }
    let _ = reader.read_exact(&mut vec![0; length]);
    *counted.lock().unwrap().entry(query).or_default() += 1;
    let _ = conn.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
}

/// Whether a `tools/call` answer is the tool's own result.
fn succeeded(answer: &Value) -> bool {
    answer.get("result").is_some() && answer["result"]["isError"] != json!(true)
}

/// Call `rs__echo` through `session` until `want(succeeded)` holds; the time it took. Fails
/// past a generous bound: the 1 s the design promises is printed, not asserted.
async fn until_echo(session: &Streamable, want: bool, what: &str) -> Duration {
    let start = Instant::now();
    let mut id = 0;
    loop {
        id += 1;
        let answer = session
            .call(json!(id), "rs__echo", json!({"text": "hi"}))
            .await
            .unwrap();
        if succeeded(&answer) == want {
            let took = start.elapsed();
            println!("{what}: {took:?}");
            return took;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: not seen within 20 s; last answer {answer}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_registration_through_one_instance_is_callable_through_the_other_and_a_removal_likewise() {
    let pg = Postgres::start();
    let up = Upstream::start(&[]);
    let (dir_a, gw_a) = gateway(&pg.url());
    let (dir_b, gw_b) = gateway(&pg.url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let on_b = open(&rt, &gw_b, None).unwrap();
    let on_a = open(&rt, &gw_a, None).unwrap();

    dir_a.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    rt.block_on(until_echo(
        &on_b,
        true,
        "registration on A callable on B after",
    ));
    let (listed, _) = dir_b.run_expect(&["gateway", "list", "--json"], 0);
    assert!(listed.contains("\"rs\""), "{listed}");

    // Disabled and enabled again through A's API (PUT): B follows both.
    for (enabled, what) in [
        (false, "disabled on A refused on B after"),
        (true, "enabled on A callable on B after"),
    ] {
        let body = json!({"name": "rs", "url": format!("{}/mcp", up.base), "enabled": enabled});
        let status = rt.block_on(async {
            http(None)
                .put(format!("http://{}/gateways/rs", gw_a.addr))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(status, 200, "PUT enabled={enabled}");
        rt.block_on(until_echo(&on_b, enabled, what));
    }

    dir_b.run_expect(&["gateway", "remove", "rs"], 0);
    rt.block_on(until_echo(&on_a, false, "removal on B refused on A after"));
    let (listed, _) = dir_a.run_expect(&["gateway", "list", "--json"], 0);
    assert!(!listed.contains("\"rs\""), "{listed}");

    // And back: the name is free everywhere, so A can register it again and B sees it.
    dir_a.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    rt.block_on(until_echo(
        &on_b,
        true,
        "registration again on A callable on B after",
    ));
    assert!(
        gw_a.log().contains("upstream removed by another instance"),
        "{}",
        gw_a.log()
    );
    assert!(
        gw_b.log()
            .contains("upstream registered by another instance"),
        "{}",
        gw_b.log()
    );
}

#[test]
fn a_token_minted_for_one_instance_is_accepted_by_the_other() {
    let pg = Postgres::start();
    let up = Upstream::start(&[]);
    let (dir_a, dir_b) = (Dir::new(), Dir::new());
    let gw_a = Gateway::start(&dir_a, &["--store", &pg.url()]);
    let gw_b = Gateway::start(&dir_b, &["--store", &pg.url()]);
    dir_a.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let (token_a, _) = dir_a.run_expect(&["token", "create"], 0);
    let (token_b, _) = dir_b.run_expect(&["token", "create"], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (token, gw, what) in [
        (&token_a, &gw_b, "A's token on B"),
        (&token_b, &gw_a, "B's token on A"),
    ] {
        let session = open(&rt, gw, Some(token.trim())).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        rt.block_on(until_echo(&session, true, what));
    }
    // A token of a gateway on another store is refused: the secret really is the store's.
    let other = Dir::new();
    let _gw = Gateway::start(&other, &[]);
    let (stranger, _) = other.run_expect(&["token", "create"], 0);
    let refused = open(&rt, &gw_a, Some(stranger.trim()));
    assert!(refused.is_err(), "a foreign token was accepted");
}

#[test]
fn calls_go_on_while_postgres_is_down_and_writes_are_refused_until_it_returns() {
    let mut pg = Postgres::start();
    let up = Upstream::start(&[]);
    let (dir, gw) = gateway(&pg.url());
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = open(&rt, &gw, None).unwrap();
    rt.block_on(until_echo(&session, true, "first call"));

    // A client calls in a loop for the whole outage.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let stop = stop.clone();
        rt.spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut id = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                match session
                    .call(json!(id), "rs__echo", json!({"text": "x"}))
                    .await
                {
                    Ok(answer) if succeeded(&answer) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    pg.stop();
    let outage = Instant::now();
    let (_, refused) = dir.run_expect(
        &["gateway", "add", "second", &format!("{}/mcp", up.base)],
        1,
    );
    assert!(
        refused.contains("store unavailable") && refused.contains("the change was not made"),
        "{refused}"
    );
    // Through the HTTP API: 503, the same words.
    let (status, body) = rt.block_on(async {
        let resp = http(None)
            .post(format!("http://{}/gateways", gw.addr))
            .json(&json!({"name": "third", "url": format!("{}/mcp", up.base)}))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store unavailable"), "{body}");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed()));
    pg.restart();

    // The gateway connects again by itself: a registration works without restarting it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = dir.run(&["gateway", "add", "second", &format!("{}/mcp", up.base)]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registration still refused after PostgreSQL came back: {}\n--- gateway log\n{}",
            String::from_utf8_lossy(&out.stderr),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = rt.block_on(caller).unwrap();
    println!(
        "calls during the outage: {ok} answered, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert!(ok > 100, "the loop made only {ok} calls");

    // Nothing registered before is lost: a fresh instance loads both from the store.
    let names = pg.sql("SELECT string_agg(name, ',' ORDER BY name) FROM registrations");
    assert_eq!(names, "rs,second");
    let (_dir2, gw2) = gateway(&pg.url());
    let fresh = open(&rt, &gw2, None).unwrap();
    rt.block_on(until_echo(&fresh, true, "a new instance calls rs after"));
    assert!(
        !gw.log().contains(PASSWORD),
        "password in the log:\n{}",
        gw.log()
    );
}

#[test]
fn a_store_with_a_newer_schema_version_is_refused() {
    let pg = Postgres::start();
    {
        let _ = gateway(&pg.url());
    }
    let version: i64 = pg.sql("SELECT version FROM mcpgw_schema").parse().unwrap();
    pg.sql(&format!(
        "UPDATE mcpgw_schema SET version = {}",
        version + 1
    ));
    let dir = Dir::new();
    let (_, stderr) = dir.run_expect(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--store",
            &pg.url(),
        ],
        1,
    );
    assert!(
        stderr.contains(&format!(
            "has schema version {}, newer than this mcpgw understands ({version})",
            version + 1
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(
        stderr.contains("postgres://mcpgw:***@127.0.0.1"),
        "{stderr}"
    );
}

#[test]
fn the_database_password_never_appears_in_what_the_gateway_prints() {
    let pg = Postgres::start();
    let dir = Dir::new();
    // A URL the parser refuses: the message names the setting, not the URL.
    let (_, bad_mode) = dir.run_expect(
        &[
            "serve",
            "--no-auth",
            "--store",
            &pg.url_with("?sslmode=strict"),
        ],
        1,
    );
    assert!(
        bad_mode.contains("--store (or MCPGW_STORE): sslmode 'strict' is not one of"),
        "{bad_mode}"
    );
    // A wrong password: refused by the server, named without either password.
    let wrong = pg.url().replace(PASSWORD, "Wrong-Pw-0fd1");
    let (_, refused) = dir.run_expect(&["serve", "--no-auth", "--store", &wrong], 1);
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    // Through the environment and the config file as well, with debug logs on.
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!("[store]\nurl = \"{}\"\n", pg.url_with("?sslmode=prefer")),
    )
    .unwrap();
    let mut cmd = dir.cmd();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--config",
        "mcpgw.toml",
    ])
    .env("RUST_LOG", "debug");
    let gw = Gateway::spawn(cmd);
    dir.run_expect(&["gateway", "list"], 0);
    let file_log = gw.log();
    drop(gw);
    let env_dir = Dir::new();
    let mut cmd = env_dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .env("MCPGW_STORE", pg.url())
        .env("RUST_LOG", "debug");
    let gw_env = Gateway::spawn(cmd);
    assert!(file_log.contains("DEBUG"), "no debug log:\n{file_log}");
    for text in [bad_mode, refused, file_log, gw_env.log()] {
        assert!(!text.contains(PASSWORD), "password shown:\n{text}");
        assert!(!text.contains("Wrong-Pw-0fd1"), "password shown:\n{text}");
    }
}

/// Readiness waits for the registrations to be loaded, not for their upstreams to be checked:
/// 1,000 upstreams that never answer (each check lasts the request timeout) do not hold it.
/// An upstream stored online is routable at once; the others are checked in the background.
#[test]
fn ready_with_a_thousand_registrations_comes_before_their_checks() {
    let pg = Postgres::start();
    let up = Upstream::start(&[]);
    let silent = Silent::start();
    {
        let _ = gateway(&pg.url());
    }
    insert_rows(
        &pg,
        "'up' || i",
        "FROM generate_series(1, 1000) AS i",
        &silent.base,
        "online",
    );
    insert_rows(&pg, "'rs'", "", &up.base, "online");
    let start = Instant::now();
    let (dir, gw) = gateway(&pg.url());
    let (status, _) = common::curl(&[&format!("http://{}/ready", gw.addr)]);
    println!(
        "ready with 1,001 registrations on PostgreSQL after {:?}",
        start.elapsed()
    );
    assert_eq!(status, 200, "/ready once the ready line is printed");

    let (listed, _) = dir.run_expect(&["gateway", "list", "--json"], 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let listed = listed.as_array().expect("a list of upstreams");
    assert_eq!(listed.len(), 1001);
    let unchecked = listed
        .iter()
        .filter(|u| u["health"]["last_error"].is_null() && u["health"]["last_success"].is_null())
        .count();
    println!("upstreams not yet checked when ready: {unchecked}");
    assert!(
        unchecked > 0,
        "every upstream was checked before the gateway was ready"
    );

    // Stored online: routable before its own check, the silent ones still being checked.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = open(&rt, &gw, None).unwrap();
    let answer = rt
        .block_on(session.call(json!(1), "rs__echo", json!({"text": "hi"})))
        .unwrap();
    assert!(succeeded(&answer), "rs__echo right after ready: {answer}");

    // The background round has started on the silent upstreams.
    let waited = Instant::now();
    while silent.accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "no health check reached the silent upstreams"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tls_to_the_database_follows_sslmode_with_the_host_name_checked_by_verify_full() {
    let mut pg = Postgres::start();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let stranger = dir.cert_gen("other", &[]);
    let ca = format!("&sslrootcert={}", pki.s("ca.crt"));
    let wrong_ca = format!("&sslrootcert={}", stranger.s("ca.crt"));
    let encrypted = "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = 'mcpgw' AND s.ssl";
    // Starts, and its connections to the database are encrypted.
    let accepted = |pg: &Postgres, query: &str| {
        let (_dir, gw) = gateway(&pg.url_with(query));
        let count: u32 = pg.sql(encrypted).parse().unwrap();
        assert!(count >= 1, "{query}: no TLS connection\n{}", gw.log());
    };
    // Refuses to start, saying why.
    let refused = |pg: &Postgres, query: &str, why: &str| {
        let (_, stderr) = Dir::new().run_expect(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-auth",
                "--store",
                &pg.url_with(query),
            ],
            1,
        );
        assert!(stderr.contains(why), "{query}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    };

    // A certificate for localhost and 127.0.0.1 from our CA.
    pg.serve_tls(&pki.file("server.crt"), &pki.file("server.key"));
    accepted(&pg, &format!("?sslmode=verify-full{ca}"));
    accepted(&pg, "?sslmode=require");
    accepted(&pg, "?sslmode=prefer");
    refused(
        &pg,
        &format!("?sslmode=verify-ca{wrong_ca}"),
        "invalid peer certificate",
    );

    // A certificate for localhost only, dialled as 127.0.0.1: the chain is good, the name not.
    let (cert, key) = pki.localhost_only();
    pg.serve_tls(&cert, &key);
    refused(
        &pg,
        &format!("?sslmode=verify-full{ca}"),
        "certificate not valid for name \"127.0.0.1\"",
    );
    accepted(&pg, &format!("?sslmode=verify-ca{ca}"));
}

/// Issue 22's acceptance: three instances on one store, 50 upstreams, each checked once per
/// interval in all (not once per instance), counted at the upstream. Each upstream is the
/// fixture under its own URL (`/mcp?u=N`), whose checks the fixture counts apart.
/// Gateways on one store sharing the health of the upstreams they count.
const INSTANCES: usize = 3;

/// [`INSTANCES`] gateways on `pg`'s store (`--no-auth`, then `args`), with `count` upstreams
/// `upN` at `BASE/mcp?u=N` registered through each instance in turn (`gateway add` with
/// `more`); returned once every instance holds them all with the health `status`.
fn fleet_holding(
    pg: &Postgres,
    args: &[&str],
    (base, count, more): (&str, usize, &[&str]),
    status: &str,
) -> Vec<(Dir, Gateway)> {
    let url = pg.url();
    let fleet: Vec<(Dir, Gateway)> = (0..INSTANCES)
        .map(|_| {
            let dir = Dir::new();
            let gw = Gateway::start(&dir, &[&["--no-auth", "--store", &url], args].concat());
            (dir, gw)
        })
        .collect();
    for i in 0..count {
        let (name, url) = (format!("up{i}"), format!("{base}/mcp?u={i}"));
        let add = [&["gateway", "add", &name, &url], more].concat();
        fleet[i % INSTANCES].0.run_expect(&add, 0);
    }
    for (n, (dir, gw)) in fleet.iter().enumerate() {
        common::wait_for(Duration::from_secs(60), || {
            let (listed, _) = dir.run_expect(&["gateway", "list", "--json"], 0);
            let listed: Value = serde_json::from_str(&listed).unwrap();
            let listed = listed.as_array().unwrap().iter();
            let with = listed.filter(|u| u["health"]["status"] == status).count();
            (with == count).then_some(()).ok_or_else(|| {
                format!(
                    "instance {n} has {with} of {count} upstreams {status}\n{}",
                    gw.log()
                )
            })
        });
    }
    fleet
}

/// What `count` (each upstream's total so far, by `upN`) added over `rounds` health rounds,
/// printed; fails unless each upstream's is one per round, give or take the round the window
/// cuts at either end (not one per instance and round).
fn assert_once_per_round(what: &str, count: impl Fn() -> Vec<u64>, rounds: u64, interval: u64) {
    let (before, since) = (count(), Instant::now());
    std::thread::sleep(Duration::from_secs(rounds * interval));
    let took = since.elapsed().as_secs_f64() / interval as f64;
    let counted: Vec<u64> = count().iter().zip(&before).map(|(a, b)| a - b).collect();
    println!(
        "{what}: {} in {took:.1} rounds of {interval} s by {INSTANCES} instances, per upstream \
         {} to {} (once per upstream and round: {took:.0}; once per instance: {:.0})",
        counted.iter().sum::<u64>(),
        counted.iter().min().unwrap(),
        counted.iter().max().unwrap(),
        took * INSTANCES as f64,
    );
    let (fewest, most) = (took.floor() as u64 - 1, took.ceil() as u64 + 1);
    let off: Vec<String> = counted
        .iter()
        .enumerate()
        .filter(|(_, n)| !(fewest..=most).contains(*n))
        .map(|(i, n)| format!("up{i}: {n}"))
        .collect();
    assert!(off.is_empty(), "{what} outside {fewest}..={most}: {off:?}");
}

/// Issue 22's acceptance: three instances on one store, 50 upstreams, each checked once per
/// interval in all (not once per instance), counted at the upstream: the fixture under its
/// own URL per upstream (`/mcp?u=N`), whose checks it counts apart. Counting starts once every
/// instance has its own catalog of each (an instance checks an upstream itself until then).
#[test]
fn each_of_fifty_upstreams_is_health_checked_once_per_interval_by_three_instances() {
    const UPSTREAMS: usize = 50;
    let pg = Postgres::start();
    let up = Upstream::start(&[]);
    let args = ["--health-interval", "1"];
    let _fleet = fleet_holding(&pg, &args, (&up.base, UPSTREAMS, &[]), "online");
    std::thread::sleep(Duration::from_secs(2));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let checks = || -> Vec<u64> {
        let stats = rt.block_on(json_of(http(None).get(format!("{}/stats", up.base))));
        let by_query = &stats["probes_by_query"];
        (0..UPSTREAMS)
            .map(|i| by_query[format!("u={i}")].as_u64().unwrap_or(0))
            .collect()
    };
    assert_once_per_round("health checks of 50 upstreams", checks, 10, 1);
    let holders = pg.sql("SELECT count(DISTINCT holder) FROM health_leases");
    println!("leases held by {holders} instance(s)");
}

/// A dead upstream is checked by the lease holder alone, not by every instance: an instance
/// without the upstream's catalog checks it itself only while it may answer (not offline).
/// The interval (16 s) is longer than the longest wait between attempts to open a connection
/// to an upstream that failed (10 s and half again), so its one checker reaches it each round.
#[test]
fn a_dead_upstream_is_checked_once_per_interval_by_three_instances_not_three_times() {
    const UPSTREAMS: usize = 20;
    let pg = Postgres::start();
    let down = Refusing::start();
    let args = ["--health-interval", "16", "--health-threshold", "1"];
    let upstreams = (down.base.as_str(), UPSTREAMS, &["--defer"][..]);
    let _fleet = fleet_holding(&pg, &args, upstreams, "offline");
    let contacts = || -> Vec<u64> {
        let requests = down.requests.lock().unwrap();
        (0..UPSTREAMS)
            .map(|i| requests.get(&format!("u={i}")).copied().unwrap_or(0))
            .collect()
    };
    assert_once_per_round("requests to 20 dead upstreams", contacts, 3, 16);
}

/// How many connections LISTEN for registry changes.
const LISTENING: &str =
    "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN mcpgw_registry'";

#[test]
fn a_change_whose_notice_was_missed_is_found_when_the_listen_connection_comes_back() {
    let pg = Postgres::start();
    let up = Upstream::start(&[]);
    let (_dir, gw) = gateway(&pg.url());
    // The gateway opens its LISTEN connection beside its start, and compares everything once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql(LISTENING) != "1" {
        assert!(
            Instant::now() < deadline,
            "no LISTEN connection\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // A row written without a notice (as if the notice had been lost)...
    insert_rows(&pg, "'rs'", "", &up.base, "unknown");
    // ...then the LISTEN connection is cut: the gateway connects again and compares everything.
    pg.sql(&LISTENING.replace("count(*)", "count(pg_terminate_backend(pid))"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = open(&rt, &gw, None).unwrap();
    rt.block_on(until_echo(&session, true, "missed change callable after"));
    let log = gw.log();
    let at = |line: &str| {
        log.find(line)
            .unwrap_or_else(|| panic!("no {line:?} in the log:\n{log}"))
    };
    assert!(
        at("change notices interrupted") < at("change notices resumed")
            && at("change notices resumed") < at("upstream registered by another instance"),
        "the row was found before the LISTEN connection came back:\n{log}"
    );
}
