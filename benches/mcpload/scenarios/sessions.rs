//! Per-client upstream sessions (issue 19): what an idle downstream session costs the gateway
//! together with its own upstream session, how many upstream `initialize`s a session causes,
//! and that ended sessions, held or short-lived, leave no upstream session behind.

use super::*;

/// Sessions opened, called or ended at once.
const IN_FLIGHT: usize = 64;

/// How long ended sessions' upstream sessions may take to be ended (in the background).
const SETTLE: Duration = Duration::from_secs(10);

/// The fixture's counters that matter here.
#[derive(Clone, Copy)]
struct Upstreams {
    /// `initialize`s it answered, ever.
    initializes: u64,
    /// Sessions open now.
    open: u64,
    /// Sessions ended by a `DELETE`, ever.
    deleted: u64,
}

async fn upstreams(fixture: &Target) -> Result<Upstreams> {
    let s = stats(fixture).await?;
    Ok(Upstreams {
        initializes: count(&s, "initializes"),
        open: count(&s, "sessions"),
        deleted: count(&s, "deleted"),
    })
}

/// Wait until the fixture has no more than `open` sessions open, at most [`SETTLE`]; what it
/// has then, and how long that took.
async fn settle(fixture: &Target, open: u64) -> Result<(Upstreams, Duration)> {
    let started = Instant::now();
    loop {
        let now = upstreams(fixture).await?;
        if now.open <= open || started.elapsed() >= SETTLE {
            return Ok((now, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one session may take for a step (open and call, a call, a `DELETE`) before it counts
/// as failed: every run is bounded.
const STEP: Duration = Duration::from_secs(10);

/// `step`, failed if it takes longer than [`STEP`].
async fn bounded<T>(step: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(STEP, step)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {STEP:?}")))
}

/// Failures among `results`, and the first one's text.
fn failures<T>(results: &[Result<T>]) -> (usize, Option<String>) {
    let failed = results.iter().filter(|r| r.is_err()).count();
    let first = results
        .iter()
        .find_map(|r| r.as_ref().err().map(|e| format!("{e:#}")));
    (failed, first)
}

/// `n` sessions, [`IN_FLIGHT`] at a time, each on a connection of its own: `initialize`,
/// `calls` calls of `up__echo`, `DELETE`.
async fn short_lived(target: &Target, n: usize, calls: usize) -> Vec<Result<()>> {
    futures_util::stream::iter(0..n)
        .map(|_| {
            bounded(async move {
                let mut w = load::Worker::open(target).await?;
                for _ in 0..calls {
                    w.call("up__echo").await?;
                }
                w.close().await
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// A fresh gateway (room for 20,000 sessions, no health checks to speak of) with the fixture
/// registered as `up`, every path a session takes exercised, and what those sessions opened
/// upstream ended again: ready to read "idle".
async fn fresh(lab: &Lab, up: &Upstream, fixture: &Target, tag: &str) -> Result<(Gateway, Target)> {
    // Room for the sessions beside the default 10,000 cap.
    std::fs::write(lab.p("mcpgw.toml"), "[mcp]\nmax_sessions = 20000\n")?;
    let config = lab.s("mcpgw.toml");
    let gw = lab.gateway(tag, &["--config", &config, "--health-interval", "3600"])?;
    let target = Target::new(&format!("{}/mcp", gw.base), None, None)?;
    register(&target, "up", &format!("{}/mcp", up.base), lab, false).await?;
    // The gateway's own session upstream (health, catalog) stays: the baseline.
    let own = upstreams(fixture).await?.open;
    let (failed, first) = failures(&short_lived(&target, 32, 3).await);
    if failed > 0 {
        bail!(
            "{failed} warm-up sessions failed: {}",
            first.unwrap_or_default()
        );
    }
    settle(fixture, own).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((gw, target))
}

/// What `n` idle sessions with their `GET /mcp` streams open cost a fresh gateway: each client
/// calls once, then listens, so its upstream session listens upstream too (a `GET` stream of
/// its own there). Then each is `DELETE`d (on a new connection).
struct Listening {
    held: usize,
    failures: usize,
    first_failure: Option<String>,
    before: u64,
    after: u64,
    /// Upstream sessions and `GET` streams opened for them.
    upstream_sessions: u64,
    upstream_gets: u64,
    end_failures: usize,
    left: u64,
}

async fn listening(lab: &Lab, up: &Upstream, fixture: &Target, n: usize) -> Result<Listening> {
    let (gw, target) = fresh(lab, up, fixture, "gl").await?;
    let before = gw.proc.rss();
    let u0 = upstreams(fixture).await?;
    let gets0 = count(&stats(fixture).await?, "gets");
    let target = &target;
    let streams: Vec<Result<(http::HeaderValue, hyper::body::Incoming)>> =
        futures_util::stream::iter(0..n)
            .map(|_| {
                bounded(async move {
                    let mut w = load::Worker::open(target).await?;
                    w.call("up__echo").await?;
                    let session = w.session();
                    Ok((session, w.listen().await?))
                })
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
    let (failed, first_failure) = failures(&streams);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gw.proc.rss();
    let u1 = upstreams(fixture).await?;
    let gets1 = count(&stats(fixture).await?, "gets");
    let held: Vec<_> = streams.into_iter().flatten().collect();
    let ended: Vec<Result<()>> = futures_util::stream::iter(&held)
        .map(|(session, _)| bounded(load::end_session(target, session)))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    drop(held);
    let (u2, _) = settle(fixture, u0.open).await?;
    Ok(Listening {
        held: n - failed,
        failures: failed,
        first_failure,
        before,
        after,
        upstream_sessions: u1.open.saturating_sub(u0.open),
        upstream_gets: gets1 - gets0,
        end_failures: failures(&ended).0,
        left: u2.open.saturating_sub(u0.open),
    })
}

/// One fresh gateway and fixture: `n` Streamable-HTTP sessions each call `echo` once (so each
/// has its own upstream session) and are held idle (RSS before and after), call once more (no
/// second `initialize` upstream), and are `DELETE`d (no upstream session left); then `n`
/// short-lived sessions (`initialize`, one call, `DELETE`) leave none either.
pub(super) async fn client_sessions(mode: Mode) -> Result<Outcome> {
    // Over 100 lines on purpose: one gateway's sessions through their phases, each reading the
    // fixture's counters the previous one left, then the verdicts.
    let n: usize = if mode.quick { 1_000 } else { 10_000 };
    let lab = Lab::new()?;
    let up = lab.upstream("u", false, false)?;
    let fixture = Target::new(&format!("{}/mcp", up.base), None, None)?;
    let (gw, target) = fresh(&lab, &up, &fixture, "g").await?;
    let before = gw.proc.rss();
    let u0 = upstreams(&fixture).await?;

    // Held: open and call once each, then idle.
    let started = Instant::now();
    let opened: Vec<Result<load::Worker>> = futures_util::stream::iter(0..n)
        .map(|_| {
            bounded(async {
                let mut w = load::Worker::open(&target).await?;
                w.call("up__echo").await?;
                Ok(w)
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let open_s = started.elapsed().as_secs_f64();
    let (open_failed, open_error) = failures(&opened);
    let held: Vec<load::Worker> = opened.into_iter().filter_map(Result::ok).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gw.proc.rss();
    let u1 = upstreams(&fixture).await?;
    // A second call each: on the session's upstream session, no new `initialize`.
    let again: Vec<Result<load::Worker>> = futures_util::stream::iter(held)
        .map(|mut w| {
            bounded(async move {
                w.call("up__echo").await?;
                Ok(w)
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let (again_failed, again_error) = failures(&again);
    let u2 = upstreams(&fixture).await?;
    let started = Instant::now();
    let closed: Vec<Result<()>> = futures_util::stream::iter(again.into_iter().flatten())
        .map(|w| bounded(w.close()))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let close_s = started.elapsed().as_secs_f64();
    let (close_failed, close_error) = failures(&closed);
    let (u3, settle_held) = settle(&fixture, u0.open).await?;

    // Short-lived: open, call, DELETE.
    let started = Instant::now();
    let (brief_failed, brief_error) = failures(&short_lived(&target, n, 1).await);
    let brief_s = started.elapsed().as_secs_f64();
    let (u4, settle_brief) = settle(&fixture, u3.open).await?;
    drop(gw);
    // Each listening session holds two of the gateway's descriptors (the client's connection and
    // its upstream session's GET stream): 10,000 do not fit under a 20,000 open-files limit.
    let l = listening(&lab, &up, &fixture, n / 2).await?;

    let per = after.saturating_sub(before) as f64 / (n - open_failed).max(1) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = Outcome::default();
    let table = &mut out.table;
    table.push_str(&format!(
        "held: {} of {n} sessions opened and called once in {open_s:.2} s ({open_failed} failed)\n",
        n - open_failed
    ));
    table.push_str(&format!(
        "mcpgw RSS idle {:.1} MiB, with sessions {:.1} MiB, per session {:.1} KiB\n",
        mib(before),
        mib(after),
        per / 1024.0
    ));
    table.push_str(&format!(
        "fixture: {} upstream sessions opened ({} initializes) for them; a second call each ({again_failed} failed): {} initializes in all\n",
        u1.open.saturating_sub(u0.open),
        u1.initializes - u0.initializes,
        u2.initializes - u0.initializes
    ));
    table.push_str(&format!(
        "DELETE of every held session in {close_s:.2} s ({close_failed} failed); {} upstream sessions left {:.1} s later ({} DELETEs upstream)\n",
        u3.open.saturating_sub(u0.open),
        settle_held.as_secs_f64(),
        u3.deleted - u2.deleted
    ));
    table.push_str(&format!(
        "short-lived: {n} sessions (initialize, call, DELETE) in {brief_s:.2} s ({brief_failed} failed, {} initializes upstream); {} upstream sessions left {:.1} s later\n",
        u4.initializes - u3.initializes,
        u4.open.saturating_sub(u3.open),
        settle_brief.as_secs_f64()
    ));
    let per_listening = l.after.saturating_sub(l.before) as f64 / l.held.max(1) as f64;
    table.push_str(&format!(
        "with GET /mcp streams (a fresh mcpgw): {} of {} sessions opened, called once and listening ({} failed); {} upstream sessions and {} upstream GET streams for them\n",
        l.held, n / 2, l.failures, l.upstream_sessions, l.upstream_gets
    ));
    table.push_str(&format!(
        "mcpgw RSS idle {:.1} MiB, with sessions {:.1} MiB, per session {:.1} KiB; {} upstream sessions left after their DELETE ({} failed)\n",
        mib(l.before),
        mib(l.after),
        per_listening / 1024.0,
        l.left,
        l.end_failures
    ));
    let errors = [
        ("open", open_error),
        ("second_call", again_error),
        ("delete", close_error),
        ("short_lived", brief_error),
        ("listening", l.first_failure.clone()),
    ];
    for (what, error) in &errors {
        if let Some(error) = error {
            table.push_str(&format!("!! first failure ({what}): {error}\n"));
        }
    }
    let held = (n - open_failed) as u64;
    let initializes = u2.initializes - u0.initializes;
    verdict(
        &mut out,
        &format!(
            "at most one upstream initialize per downstream session and upstream: initializes = sessions (at {n} sessions, 2 calls each)"
        ),
        format!("{initializes} initializes for {held} sessions"),
        initializes == held && again_failed == 0,
    );
    verdict(
        &mut out,
        &format!(
            "≤ 24 KiB RSS per idle Streamable-HTTP session including its upstream session (at {n} sessions)"
        ),
        format!("{:.1} KiB ({held} held)", per / 1024.0),
        per <= 24.0 * 1024.0 && open_failed == 0,
    );
    verdict(
        &mut out,
        &format!(
            "≤ 24 KiB RSS per idle Streamable-HTTP session with its GET /mcp stream, including its upstream session and GET stream (at {} sessions)",
            n / 2
        ),
        format!("{:.1} KiB ({} held)", per_listening / 1024.0, l.held),
        per_listening <= 24.0 * 1024.0 && l.failures == 0,
    );
    let left_held = u3.open.saturating_sub(u0.open);
    verdict(
        &mut out,
        &format!("0 upstream sessions left after {n} held sessions are DELETEd"),
        format!(
            "{left_held} left ({close_failed} DELETEs failed); of {} with GET streams, {} left ({} failed)",
            l.held, l.left, l.end_failures
        ),
        left_held == 0 && close_failed == 0 && l.left == 0 && l.end_failures == 0,
    );
    let left_brief = u4.open.saturating_sub(u3.open);
    verdict(
        &mut out,
        &format!(
            "0 upstream sessions left after {n} short-lived sessions (initialize, call, DELETE)"
        ),
        format!("{left_brief} left ({brief_failed} sessions failed)"),
        left_brief == 0 && brief_failed == 0,
    );
    out.figures = json!({
        "sessions": n,
        "held": {"opened": held, "failures": open_failed,
                 "open_s": open_s, "rss_idle_bytes": before, "rss_with_sessions_bytes": after,
                 "rss_per_session_bytes": per,
                 "upstream_sessions_opened": u1.open.saturating_sub(u0.open),
                 "upstream_initializes_after_first_call": u1.initializes - u0.initializes,
                 "upstream_initializes_after_second_call": initializes,
                 "second_call_failures": again_failed, "delete_s": close_s,
                 "delete_failures": close_failed, "upstream_deletes": u3.deleted - u2.deleted,
                 "upstream_sessions_left": left_held, "settle_s": settle_held.as_secs_f64()},
        "short_lived": {"failures": brief_failed, "run_s": brief_s,
                        "upstream_initializes": u4.initializes - u3.initializes,
                        "upstream_deletes": u4.deleted - u3.deleted,
                        "upstream_sessions_left": left_brief, "settle_s": settle_brief.as_secs_f64()},
        "listening": {"held": l.held, "failures": l.failures, "rss_idle_bytes": l.before,
                      "rss_with_sessions_bytes": l.after, "rss_per_session_bytes": per_listening,
                      "upstream_sessions_opened": l.upstream_sessions,
                      "upstream_get_streams": l.upstream_gets, "delete_failures": l.end_failures,
                      "upstream_sessions_left": l.left},
        "first_failures": errors.iter().map(|(what, e)| (what.to_string(), json!(e))).collect::<serde_json::Map<_, _>>(),
    });
    Ok(out)
}
