//! `[limits]` of `mcpgw.toml` and the connection caps of `[http]`: how much of the gateway one
//! principal, one peer address or one message may take, validated into [`QuotaLimits`]
//! (enforced by `crate::access::quota`).
//!
//! ```toml
//! [limits]
//! sessions_per_principal = 2500  # default: a quarter of [mcp] max_sessions
//! requests_per_second = 20       # per principal; 0 (the default): no rate limit
//! burst = 40                     # requests at once above the rate; default: one second's worth
//! max_batch = 100                # entries of one JSON-RPC batch
//!
//! [http]
//! max_connections = 10000        # open at once on the listener
//! max_connections_per_peer = 1000
//! ```

use serde::Deserialize;

use super::{ConfigError, FileHttp, SessionLimits, field_error};

/// Default most entries of one JSON-RPC batch.
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Default most connections open at once on the listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default most connections open at once from one peer address.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 1_000;

/// `[limits]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Sessions one principal may hold open, on every transport together.
    pub sessions_per_principal: Option<usize>,
    /// Requests per second one principal may make (0: no limit).
    pub requests_per_second: Option<u32>,
    /// Requests above the rate one principal may make at once.
    pub burst: Option<u32>,
    /// Entries of one JSON-RPC batch.
    pub max_batch: Option<usize>,
}

/// A request rate: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, at least 1.
    pub per_second: u32,
    /// Requests at once, at least 1.
    pub burst: u32,
}

/// The quotas, validated: every bound at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Sessions (Streamable HTTP, SSE, WebSocket, listen streams) one principal may hold open.
    pub sessions_per_principal: usize,
    /// Each principal's request rate; `None`: not limited.
    pub rate: Option<Rate>,
    /// Entries of one JSON-RPC batch.
    pub max_batch: usize,
    /// Connections open at once on the listener.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: usize,
}

impl QuotaLimits {
    /// The defaults for these session bounds.
    pub fn for_sessions(sessions: SessionLimits) -> Self {
        Self {
            sessions_per_principal: default_sessions_per_principal(sessions),
            rate: None,
            max_batch: DEFAULT_MAX_BATCH,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
        }
    }
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self::for_sessions(SessionLimits::default())
    }
}

/// A quarter of a transport's session table: one principal filling its quota leaves the rest
/// to at least three others.
fn default_sessions_per_principal(sessions: SessionLimits) -> usize {
    (sessions.max / 4).max(1)
}

/// `[limits]` and `[http]`'s caps merged with the defaults.
pub(super) fn resolve(
    file: &FileLimits,
    http: &FileHttp,
    sessions: SessionLimits,
    origin: &str,
) -> Result<QuotaLimits, ConfigError> {
    let defaults = QuotaLimits::for_sessions(sessions);
    let at_least_one = |key, value: Option<usize>, default| match value {
        Some(0) => Err(field_error(
            origin,
            key,
            "a number of at least 1",
            "0".into(),
        )),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let rate = match (file.requests_per_second.unwrap_or(0), file.burst) {
        (0, None) => None,
        (0, Some(burst)) => {
            return Err(field_error(
                origin,
                "limits.burst",
                "no burst without limits.requests_per_second",
                burst.to_string(),
            ));
        }
        (_, Some(0)) => {
            return Err(field_error(
                origin,
                "limits.burst",
                "a number of at least 1",
                "0".into(),
            ));
        }
        (per_second, burst) => Some(Rate {
            per_second,
            burst: burst.unwrap_or(per_second),
        }),
    };
    Ok(QuotaLimits {
        sessions_per_principal: at_least_one(
            "limits.sessions_per_principal",
            file.sessions_per_principal,
            defaults.sessions_per_principal,
        )?,
        rate,
        max_batch: at_least_one("limits.max_batch", file.max_batch, defaults.max_batch)?,
        max_connections: at_least_one(
            "http.max_connections",
            http.max_connections,
            defaults.max_connections,
        )?,
        max_connections_per_peer: at_least_one(
            "http.max_connections_per_peer",
            http.max_connections_per_peer,
            defaults.max_connections_per_peer,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(limits: &str, http: &str) -> Result<QuotaLimits, ConfigError> {
        let file: FileLimits = toml::from_str(limits).unwrap();
        let http: FileHttp = toml::from_str(http).unwrap();
        resolve(&file, &http, SessionLimits::default(), "mcpgw.toml")
    }

    #[test]
    fn defaults_are_a_quarter_of_the_sessions_no_rate_and_generous_caps() {
        let limits = resolved("", "").unwrap();
        assert_eq!(limits, QuotaLimits::default());
        assert_eq!(limits.sessions_per_principal, 2_500);
        assert_eq!(limits.rate, None);
        assert_eq!(limits.max_batch, 100);
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_peer),
            (10_000, 1_000)
        );
        let tiny = SessionLimits {
            max: 2,
            ..SessionLimits::default()
        };
        assert_eq!(QuotaLimits::for_sessions(tiny).sessions_per_principal, 1);
    }

    #[test]
    fn the_burst_defaults_to_one_second_of_the_rate() {
        let limits = resolved("requests_per_second = 20", "").unwrap();
        assert_eq!(
            limits.rate,
            Some(Rate {
                per_second: 20,
                burst: 20
            })
        );
        let limits = resolved("requests_per_second = 20\nburst = 5", "").unwrap();
        assert_eq!(limits.rate.map(|r| r.burst), Some(5));
    }

    #[test]
    fn zeros_and_a_burst_without_a_rate_are_refused_naming_the_key() {
        for (limits, http, key) in [
            (
                "sessions_per_principal = 0",
                "",
                "limits.sessions_per_principal",
            ),
            ("max_batch = 0", "", "limits.max_batch"),
            ("burst = 3", "", "limits.burst"),
            ("requests_per_second = 3\nburst = 0", "", "limits.burst"),
            ("", "max_connections = 0", "http.max_connections"),
            (
                "",
                "max_connections_per_peer = 0",
                "http.max_connections_per_peer",
            ),
        ] {
            let err = resolved(limits, http).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("mcpgw.toml"),
                "{limits} {http}: {err}"
            );
        }
    }
}
