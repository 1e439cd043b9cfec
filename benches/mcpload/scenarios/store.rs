//! The store's cost on the call path (issue 22): the same HTTP load (c=16, `tools/call` echo of
//! the HTTP fixture) through a gateway on SQLite and through one on PostgreSQL, side by side:
//! calls/s and the gateway's CPU per call. Registrations are cached in memory, so a call should
//! cost the same on either store.

use super::stdio::{Row, http_row, note_errors, tabled};
use super::*;

/// The tests' PostgreSQL (`initdb` and `postgres` from Debian's package in a temp dir, as an
/// unprivileged user when run as root): one copy of how to start it, for tests and bench. It
/// asks its parent for `free_port` and `wait_for`, which `wait.rs` gives.
#[path = "../../../tests/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;
#[path = "../../../tests/common/wait.rs"]
mod wait;
use wait::{free_port, wait_for};

/// Gateway CPU per call on PostgreSQL over that on SQLite that still counts as the same.
const WITHIN: f64 = 1.05;

/// A gateway on `store` (none: the SQLite default) with the fixture at `base` registered as
/// `up`; its target.
async fn gateway_on(
    lab: &Lab,
    tag: &str,
    store: Option<&str>,
    base: &str,
) -> Result<(Gateway, Target)> {
    let mut flags = vec!["--health-interval", "3600"];
    flags.extend(store.map(|url| ["--store", url]).into_iter().flatten());
    let gw = lab.gateway(tag, &flags)?;
    let target = Target::new(&format!("{}/mcp", gw.base), None, None)?;
    register(&target, "up", &format!("{base}/mcp"), lab, false).await?;
    Ok((gw, target))
}

/// SQLite and PostgreSQL side by side at c=16.
pub async fn store(mode: Mode) -> Result<Outcome> {
    let lab = Lab::new()?;
    let pg = tokio::task::spawn_blocking(postgres::Postgres::start).await?;
    let up = lab.upstream("u", false, false)?;
    let (sqlite_gw, sqlite) = gateway_on(&lab, "sqlite", None, &up.base).await?;
    let (pg_gw, on_pg) = gateway_on(&lab, "postgres", Some(&pg.url()), &up.base).await?;
    let upstream = up.proc.pid();
    let mut rows = Vec::new();
    for (path, target, gw) in [
        ("sqlite", &sqlite, &sqlite_gw),
        ("postgres", &on_pg, &pg_gw),
    ] {
        let gateway = Some(gw.proc.pid());
        rows.push(http_row(path, target, "up__echo", mode, gateway, upstream).await?);
    }
    let mut out = tabled(&rows);
    let (on_sqlite, on_postgres) = (&rows[0], &rows[1]);
    let gw_of = Row::gateway_or_nan;
    let cpu_ratio = gw_of(on_postgres) / gw_of(on_sqlite);
    let rate_ratio = on_postgres.report.rate() / on_sqlite.report.rate();
    out.table.push_str(&format!(
        "gateway CPU per call, PostgreSQL / SQLite: {cpu_ratio:.3} ({:.1} / {:.1} µs; goal ≤ {WITHIN}); \
         calls/s: {rate_ratio:.3} ({:.0} / {:.0})\n",
        gw_of(on_postgres),
        gw_of(on_sqlite),
        on_postgres.report.rate(),
        on_sqlite.report.rate(),
    ));
    verdict(
        &mut out,
        "CPU per call on PostgreSQL within 5% of SQLite (c=16, tools/call echo)",
        format!("{cpu_ratio:.3} ×"),
        cpu_ratio <= WITHIN,
    );
    note_errors(&mut out, &rows);
    out.figures = json!({
        "runs": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "gateway_cpu_postgres_to_sqlite": cpu_ratio,
        "rate_postgres_to_sqlite": rate_ratio,
    });
    drop((sqlite_gw, pg_gw));
    // Stopping the server waits for it: off the async workers.
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(out)
}
