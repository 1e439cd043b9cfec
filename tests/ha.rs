//! Issue 22: three gateways on one PostgreSQL store behind HAProxy (round-robin, no stickiness;
//! [`common::haproxy`]), with 16 clients calling in a loop: 2026-07-28 clients (no session),
//! session-era clients over Streamable HTTP (one session each, served by whichever instance a
//! request reaches: sessions are portable through the store) and legacy SSE clients (a stream
//! on one instance; their messages, sprayed over every instance, are forwarded to it).
//!
//! A registration through one instance is callable through every instance, a removal
//! likewise; a rolling restart and an upgrade in place fail no call and lose no session; kill
//! -9 of one instance fails at most the calls in flight on it, each with an error the client
//! sees, and every Streamable-HTTP session goes on elsewhere under its id. An SSE session is
//! its stream, and ends with the instance holding it: its client opens another. What a session
//! keeps across instances is `tests/ha_sessions.rs`'s.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::{self, echo_modern};
use common::fleet::{CLIENT, Fleet, INSTANCES, client, serve};

/// Clients calling at once ([`kind_of`] says how each talks).
const CLIENTS: usize = 16;
/// Each client stops after this many calls, or when told.
const CALLS_PER_CLIENT: usize = 3000;

/// How a load client talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 2026-07-28, no session.
    Modern,
    /// Session era over Streamable HTTP: one session for all its calls, whichever instance
    /// each reaches.
    Session,
    /// Legacy HTTP+SSE: a stream on one instance, its messages posted through the balancer
    /// to any (forwarded to the one holding the stream).
    Sse,
}

/// The kind of client `n`: a quarter stateless, half Streamable-HTTP sessions, a quarter SSE.
fn kind_of(n: usize) -> Kind {
    [Kind::Modern, Kind::Session, Kind::Session, Kind::Sse][n % 4]
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Calls answered.
    ok: AtomicUsize,
    /// Calls that failed, by kind, with what the client saw.
    failures: Mutex<Vec<(Kind, String)>>,
    /// Streamable-HTTP sessions the gateway no longer knew (a 404 on a session it issued).
    sessions_lost: AtomicUsize,
    /// SSE sessions whose stream ended with its instance (closed, or a 404 for a message not
    /// yet accepted), taken up again on a new stream with `Last-Event-ID`.
    sse_resumed: AtomicUsize,
    /// Clients answered at least once.
    started: AtomicUsize,
}

/// [`CLIENTS`] clients of every [`Kind`] calling `rs__echo` through the balancer in a loop.
struct Load {
    done: Arc<AtomicBool>,
    tally: Arc<Tally>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a load run ended with.
struct Outcome {
    answered: usize,
    failures: Vec<(Kind, String)>,
    sessions_lost: usize,
    sse_resumed: usize,
}

impl Load {
    /// Start the clients and wait until they have made 100 calls.
    fn start(fleet: &Fleet) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let workers = (0..CLIENTS)
            .map(|n| {
                let (done, tally) = (done.clone(), tally.clone());
                let base = fleet.proxy.base();
                fleet
                    .rt
                    .spawn(async move { run_client(kind_of(n), n, &base, &done, &tally).await })
            })
            .collect();
        let load = Self {
            done,
            tally,
            workers,
        };
        // Every client has its session (or, stateless, its connection) and has been answered.
        common::wait_for(Duration::from_secs(30), || {
            let started = load.tally.started.load(Ordering::Acquire);
            if started == CLIENTS {
                Ok(())
            } else {
                Err(format!("{started} of {CLIENTS} clients answered"))
            }
        });
        load.until_more(100);
        load
    }

    /// Calls answered so far.
    fn answered(&self) -> usize {
        self.tally.ok.load(Ordering::Acquire)
    }

    /// Wait until `more` calls more than now are answered (or every client is done).
    fn until_more(&self, more: usize) {
        let target = self.answered() + more;
        while self.answered() < target && self.workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop the clients and wait for them.
    fn stop(self, rt: &tokio::runtime::Runtime) -> Outcome {
        self.done.store(true, Ordering::Release);
        for w in self.workers {
            rt.block_on(w).unwrap();
        }
        let tally = &self.tally;
        Outcome {
            answered: tally.ok.load(Ordering::Acquire),
            failures: tally.failures.lock().unwrap().clone(),
            sessions_lost: tally.sessions_lost.load(Ordering::Acquire),
            sse_resumed: tally.sse_resumed.load(Ordering::Acquire),
        }
    }
}

/// A legacy SSE session through the balancer, initialized.
async fn open_sse(http: &reqwest::Client, base: &str) -> anyhow::Result<clients::SseSession> {
    let mut sse = clients::SseSession::open(http.clone(), base, "/sse", Some(CLIENT)).await?;
    let init = serde_json::json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "ha-sse", "version": "1"}}});
    let answer = sse.request(&init).await?;
    anyhow::ensure!(answer.get("result").is_some(), "initialize: {answer}");
    sse.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await?;
    Ok(sse)
}

/// Whether `answer` is `rs__echo`'s of `text`.
fn echoed(answer: &serde_json::Value, text: &str) -> bool {
    clients::text(answer).contains(text)
}

/// One client of `kind` calling until told to stop or [`CALLS_PER_CLIENT`] calls are made.
async fn run_client(kind: Kind, n: usize, base: &str, done: &AtomicBool, tally: &Tally) {
    let http = client();
    let url = format!("{base}/mcp");
    let fail = |what: String| tally.failures.lock().unwrap().push((kind, what));
    let mut session: Option<clients::Streamable> = None;
    let mut sse: Option<clients::SseSession> = None;
    let mut call = 0;
    let mut started = false;
    while call < CALLS_PER_CLIENT && !done.load(Ordering::Acquire) {
        let text = format!("c{n}-{call}");
        let outcome = match kind {
            Kind::Modern => echo_modern(&http, &url, Some(CLIENT), &text).await,
            Kind::Session => {
                if session.is_none() {
                    match clients::Streamable::open(http.clone(), &url, Some(CLIENT)).await {
                        Ok(opened) => session = Some(opened),
                        Err(e) => {
                            fail(format!("initialize: {e}"));
                            continue;
                        }
                    }
                }
                let open = session.as_ref().unwrap();
                let args = serde_json::json!({"text": text});
                match open.call(serde_json::json!(call), "rs__echo", args).await {
                    Ok(answer) if echoed(&answer, &text) => Ok(()),
                    Ok(answer) => Err(format!("session call: {answer}")),
                    Err(e) if e.to_string().contains("HTTP 404") => {
                        tally.sessions_lost.fetch_add(1, Ordering::AcqRel);
                        session = None;
                        Err(format!("session lost: {e}"))
                    }
                    Err(e) => Err(format!("session call: {e:#}")),
                }
            }
            Kind::Sse => {
                if sse.is_none() {
                    match open_sse(&http, base).await {
                        Ok(opened) => sse = Some(opened),
                        Err(e) => {
                            fail(format!("SSE open: {e:#}"));
                            continue;
                        }
                    }
                }
                let open = sse.as_mut().unwrap();
                let args = serde_json::json!({"text": text});
                let outcome = match open.call(serde_json::json!(call), "rs__echo", args).await {
                    Ok(answer) if echoed(&answer, &text) => Ok(()),
                    Ok(answer) => Err(format!("SSE call: {answer}")),
                    // Not accepted: the instance holding the stream is gone. The call was
                    // never taken: it is made again once the session is taken up again.
                    Err(e) if e.to_string().contains("HTTP 404") => Err(String::new()),
                    Err(e) => Err(format!("SSE call: {e:#}")),
                };
                if outcome.is_err() {
                    // As an EventSource does: the stream again, with the last event id. The
                    // session goes on without a new `initialize`, or is lost.
                    if open.reopen().await.is_ok() {
                        tally.sse_resumed.fetch_add(1, Ordering::AcqRel);
                    } else {
                        tally.sessions_lost.fetch_add(1, Ordering::AcqRel);
                        sse = None;
                    }
                }
                match outcome {
                    Err(e) if e.is_empty() => continue,
                    other => other,
                }
            }
        };
        match outcome {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::AcqRel);
                if !started {
                    started = true;
                    tally.started.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(e) => fail(e),
        }
        call += 1;
    }
}

/// Assert that no call failed and no session was lost (an SSE stream opened again is its
/// session taken up: the instances' logs, `gone` those of processes replaced meanwhile, say so
/// at least as often), showing the first failures and the logs if not.
fn assert_no_failure(fleet: &Fleet, out: &Outcome, gone: &str) {
    println!(
        "{} calls answered, {} failed, {} sessions lost, {} SSE sessions taken up again on a new stream",
        out.answered,
        out.failures.len(),
        out.sessions_lost,
        out.sse_resumed
    );
    let logs = format!("{gone}{}", fleet.logs());
    let taken_up = logs.matches("SSE session taken up again").count();
    assert!(
        taken_up >= out.sse_resumed,
        "{} SSE streams opened again, {taken_up} sessions taken up\n{logs}",
        out.sse_resumed,
    );
    assert!(
        out.failures.is_empty() && out.sessions_lost == 0,
        "{} failed calls of {}, {} sessions lost, e.g. {:?}\n{}",
        out.failures.len(),
        out.answered + out.failures.len(),
        out.sessions_lost,
        &out.failures[..out.failures.len().min(5)],
        fleet.logs()
    );
}

#[test]
fn a_registration_through_one_instance_is_callable_through_every_instance_and_a_removal_likewise() {
    let fleet = Fleet::start();
    fleet.instances[1]
        .dir
        .run_expect(&["gateway", "remove", "rs"], 0);
    fleet.until_everywhere(false, "removal through instance 1");
    fleet.register_through(2);
    fleet.until_everywhere(true, "registration through instance 2");
}

#[test]
fn a_rolling_restart_of_every_instance_under_load_fails_no_call() {
    let mut fleet = Fleet::start();
    let load = Load::start(&fleet);
    let store = fleet.pg.url();
    let mut gone = String::new();
    for n in 0..INSTANCES {
        let instance = &mut fleet.instances[n];
        let listen = instance.gw.addr.to_string();
        instance.gw.signal(common::SIGTERM);
        assert_eq!(
            instance.gw.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{}",
            instance.gw.log()
        );
        gone.push_str(&instance.gw.log());
        instance.gw = serve(&instance.dir, &store, &listen, false);
        fleet.proxy.wait_up(INSTANCES, Duration::from_secs(20));
        // The restarted instance takes its share of the calls before the next one goes.
        load.until_more(100);
    }
    let out = load.stop(&fleet.rt);
    assert_no_failure(&fleet, &out, &gone);
}

#[test]
fn kill_9_of_one_instance_under_load_fails_at_most_the_calls_in_flight_on_it() {
    let mut fleet = Fleet::start();
    let load = Load::start(&fleet);
    fleet.instances[1].gw.signal(9);
    let _ = fleet.instances[1].gw.wait_exit(Duration::from_secs(10));
    let at_kill = load.answered();
    // Calls go on through the other two.
    load.until_more(300);
    let out = load.stop(&fleet.rt);
    let failures = &out.failures;
    println!(
        "{} calls answered ({} after the kill), {} failed, {} SSE sessions taken up again: {failures:?}",
        out.answered,
        out.answered - at_kill,
        failures.len(),
        out.sse_resumed
    );
    assert!(
        out.answered >= at_kill + 300,
        "calls did not go on after the kill\n{}",
        fleet.logs()
    );
    // At most one call per client can have been in flight on the killed instance.
    assert!(
        failures.len() <= CLIENTS,
        "{} failed calls, more than the {CLIENTS} that can be in flight: {failures:?}\n{}",
        failures.len(),
        fleet.logs()
    );
    // Each is an error the client saw, not a call left hanging until its timeout.
    assert!(
        failures.iter().all(|(_, f)| !f.contains("timed out")),
        "{failures:?}"
    );
    // No session was lost: every Streamable-HTTP session went on, on another instance, under
    // the same id, and every SSE session whose stream went with the instance was taken up again
    // on a new stream without a new `initialize` (the instances say so, once each at least).
    assert_eq!(
        out.sessions_lost,
        0,
        "sessions lost with the killed instance: {failures:?}\n{}",
        fleet.logs()
    );
    let taken_up = fleet.logs().matches("SSE session taken up again").count();
    assert!(
        taken_up >= out.sse_resumed,
        "{} SSE streams opened again, {taken_up} sessions taken up\n{}",
        out.sse_resumed,
        fleet.logs()
    );
    // And each was on the killed instance: HAProxy counts them lost there. Its checks mark
    // the instance down after two failures in a row; the calls above may outrun that.
    let after = common::wait_for(Duration::from_secs(10), || {
        let servers = fleet.proxy.servers();
        if servers[1].name == "gw2" && servers[1].status.starts_with("DOWN") {
            Ok(servers)
        } else {
            Err(format!(
                "HAProxy did not mark the killed instance down: {servers:?}"
            ))
        }
    });
    println!("HAProxy's servers after the kill: {after:?}");
    // HAProxy saw the losses on the killed instance and on no other. (Its counters do not
    // match the clients' errors one for one: a request aborted while HAProxy was still
    // sending it is counted apart, so the count is compared by where it is, not how many.)
    assert!(
        after[1].lost > 0 && after[0].lost == 0 && after[2].lost == 0,
        "losses not where the kill was: {after:?}\n{}",
        fleet.logs()
    );
}

#[test]
fn an_upgrade_in_place_of_one_instance_under_load_fails_no_call() {
    let mut fleet = Fleet::start();
    let load = Load::start(&fleet);
    let store = fleet.pg.url();
    let instance = &mut fleet.instances[0];
    let new = serve(&instance.dir, &store, "127.0.0.1:0", true);
    assert_eq!(
        new.addr, instance.gw.addr,
        "the new gateway serves the old address"
    );
    assert_eq!(
        instance.gw.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        instance.gw.log()
    );
    let gone = instance.gw.log();
    instance.gw = new;
    fleet.proxy.wait_up(INSTANCES, Duration::from_secs(20));
    load.until_more(300);
    let out = load.stop(&fleet.rt);
    assert_no_failure(&fleet, &out, &gone);
}

#[test]
fn the_documented_haproxy_configuration_is_the_one_tested_here() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/DEPLOYMENT.md"))
        .unwrap();
    let section = doc
        .split_once("### HAProxy, plain HTTP to the instances")
        .expect("DEPLOYMENT.md has the plain-HTTP HAProxy section")
        .1;
    let block = section
        .split_once("```haproxy\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section has a haproxy block")
        .0;
    let servers: Vec<String> = (11..14).map(|n| format!("10.0.0.{n}:8080")).collect();
    let documented = common::haproxy::config(
        &[],
        ":80",
        &servers,
        "a-long-random-probe-token",
        "inter 2s fall 2 rise 2",
    );
    assert_eq!(block, documented);
}
