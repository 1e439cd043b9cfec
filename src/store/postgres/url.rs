//! `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...&sslrootcert=FILE]` parsed into
//! the connection settings, the TLS settings of its `sslmode`, and a form fit to print.
//!
//! The password is a secret: [`PgUrl`]'s `Display` and `Debug` replace it with `***`, every
//! error names what is wrong without quoting the URL, and nothing else keeps the raw text.

use std::path::PathBuf;
use std::time::Duration;

/// How long one connection attempt may take (TCP, TLS and authentication together).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store URL cannot be used. Never carries the URL itself (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgUrlError {
    /// Not a URL at all.
    #[error(
        "not a URL ({reason}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]"
    )]
    Syntax {
        /// The parser's reason (it does not quote the input).
        reason: String,
    },
    /// A scheme other than `postgres`/`postgresql`.
    #[error(
        "scheme '{scheme}' is not supported; expected postgres:// (or the SQLite default: no store URL at all)"
    )]
    Scheme {
        /// The scheme given.
        scheme: String,
    },
    /// A part the connection needs is missing.
    #[error("the URL has no {part}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
    Missing {
        /// `host`, `user name` or `database name`.
        part: &'static str,
    },
    /// A query parameter mcpgw does not know.
    #[error("unknown parameter '{name}'; expected sslmode, sslrootcert or application_name")]
    Parameter {
        /// Its name.
        name: String,
    },
    /// An `sslmode` libpq does not know.
    #[error("sslmode '{given}' is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode {
        /// The value given.
        given: String,
    },
    /// `sslrootcert` cannot be read or holds no certificate.
    #[error("sslrootcert {path}: {detail}")]
    RootCert {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
}

/// libpq's `sslmode` values, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, unverified; plain otherwise (libpq's default).
    Prefer,
    /// TLS, unverified: protects against eavesdroppers, not against an impostor. With
    /// `sslrootcert` given, the chain is verified as in `verify-ca` (as libpq does).
    Require,
    /// TLS, the chain verified against `sslrootcert` (or the system store); any host name.
    VerifyCa,
    /// TLS, the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self, PgUrlError> {
        Ok(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(PgUrlError::SslMode {
                    given: text.to_owned(),
                });
            }
        })
    }

    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A parsed PostgreSQL store URL.
#[derive(Clone)]
pub struct PgUrl {
    /// The connection settings, password included.
    pub(super) config: tokio_postgres::Config,
    /// `sslmode`.
    pub(super) ssl: SslMode,
    /// `sslrootcert`: the CA bundle to verify the server against.
    pub(super) root_cert: Option<PathBuf>,
    /// The URL with its password replaced by `***`.
    shown: String,
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgUrl").field(&self.shown).finish()
    }
}

impl PgUrl {
    /// Parse and check a store URL (the `sslrootcert` file is read when connecting).
    pub fn parse(text: &str) -> Result<Self, PgUrlError> {
        let url = url::Url::parse(text).map_err(|e| PgUrlError::Syntax {
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(PgUrlError::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let decode = |s: &str| {
            percent_decode(s).map_err(|()| PgUrlError::Syntax {
                reason: "a percent-escape is not UTF-8".into(),
            })
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(PgUrlError::Missing { part: "host" }),
        };
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err(PgUrlError::Missing { part: "user name" });
        }
        let dbname = decode(url.path().trim_start_matches('/'))?;
        if dbname.is_empty() {
            return Err(PgUrlError::Missing {
                part: "database name",
            });
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host)
            .port(url.port().unwrap_or(5432))
            .user(&user)
            .dbname(&dbname)
            .application_name("mcpgw")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(password) = url.password() {
            config.password(decode(password)?);
        }
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        for (name, value) in url.query_pairs() {
            match &*name {
                "sslmode" => ssl = SslMode::parse(&value)?,
                "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
                "application_name" => {
                    config.application_name(value.into_owned());
                }
                _ => {
                    return Err(PgUrlError::Parameter {
                        name: name.into_owned(),
                    });
                }
            }
        }
        config.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let mut shown = url.clone();
        if shown.password().is_some() {
            // Cannot fail: a URL with a password has a host.
            let _ = shown.set_password(Some("***"));
        }
        Ok(Self {
            config,
            ssl,
            root_cert,
            shown: shown.to_string(),
        })
    }

    /// `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl
    }
}

/// `%XX` escapes decoded; `Err` when the result is not UTF-8.
fn percent_decode(text: &str) -> Result<String, ()> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_in_every_printed_form() {
        let url = PgUrl::parse(
            "postgres://mcpgw:s%40cret-pw@db.example:6543/registry?sslmode=verify-full",
        )
        .unwrap();
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("cret-pw"), "{shown}");
        assert!(
            shown.contains("postgres://mcpgw:***@db.example:6543/registry"),
            "{shown}"
        );
        assert_eq!(url.config.get_password(), Some(&b"s@cret-pw"[..]));
        assert_eq!(url.ssl_mode(), SslMode::VerifyFull);
    }

    #[test]
    fn errors_name_the_problem_without_the_url() {
        let cases = [
            ("mysql://u:pw-secret@h/db", "scheme 'mysql'"),
            ("postgres://u:pw-secret@h/", "no database name"),
            ("postgres://:pw-secret@h/db", "no user name"),
            (
                "postgres://u:pw-secret@h/db?sslmode=strict",
                "sslmode 'strict'",
            ),
            (
                "postgres://u:pw-secret@h/db?pool=3",
                "unknown parameter 'pool'",
            ),
            ("pw-secret", "not a URL"),
        ];
        for (text, expected) in cases {
            let err = PgUrl::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("pw-secret"), "{text}: {err}");
        }
    }

    #[test]
    fn default_sslmode_is_prefer_as_in_libpq() {
        let url = PgUrl::parse("postgresql://u@127.0.0.1/db").unwrap();
        assert_eq!(url.ssl_mode(), SslMode::Prefer);
        assert_eq!(url.to_string(), "postgresql://u@127.0.0.1/db");
    }
}
