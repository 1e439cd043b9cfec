//! Stage **audit**, last: what one MCP request came to, as a line of the audit log
//! ([`crate::access::audit`]). Both forms of a request end here: a tree answered by
//! [`super::dispatch::handle`], and a call forwarded as bytes by [`super::call::forward`].

use std::time::Instant;

use serde_json::Value;

use super::{AppState, Ctx, Scope};
use crate::access::audit::{Entry, Kind, since};
use crate::jsonrpc::code;

/// How a request ended, for the log.
#[derive(Debug, Clone, Copy)]
pub(super) enum Status {
    /// A result.
    Ok,
    /// A JSON-RPC error with this code (`None`: an upstream's, passed on unread).
    Error(Option<i64>),
}

impl Status {
    /// The status of a JSON-RPC answer.
    pub(super) fn of(answer: &Value) -> Self {
        match answer.get("error") {
            Some(error) => Self::Error(error.get("code").and_then(Value::as_i64)),
            None => Self::Ok,
        }
    }
}

/// What a request named: its tool or prompt name, its resource URI, or its completion's
/// reference; `None` for the rest.
pub(super) fn target_of(params: Option<&Value>) -> Option<String> {
    let params = params?;
    ["/name", "/uri", "/ref/name", "/ref/uri"]
        .iter()
        .find_map(|at| params.pointer(at).and_then(Value::as_str))
        .map(str::to_owned)
}

/// Record one request.
pub(super) fn record(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    method: &str,
    target: Option<&str>,
    status: Status,
    started: Instant,
) {
    let sep = state.registry.settings().separator.as_str();
    let upstream = match scope {
        Scope::One(name) => Some(name.as_str()),
        Scope::All => target.and_then(|t| t.split_once(sep)).map(|(u, _)| u),
    };
    let (principal, auth) = Entry::who(&ctx.principal);
    let (decision, status) = match status {
        Status::Ok => ("allow", Value::from("ok")),
        Status::Error(Some(code::FORBIDDEN)) => ("deny", Value::from(code::FORBIDDEN)),
        Status::Error(Some(c)) => ("allow", Value::from(c)),
        Status::Error(None) => ("allow", Value::from("error")),
    };
    state.audit.record(&Entry {
        kind: Kind::Mcp,
        principal,
        auth,
        // Its display names it by transport and fingerprint, never by its id.
        session: ctx.session.map(ToString::to_string),
        method,
        upstream,
        target,
        decision,
        status,
        duration_ms: since(started),
    });
}
