//! `[store]`, `--store` and `MCPGW_STORE`: where registrations live. The URL may hold a
//! database password, so nothing here prints it: `Debug` is redacted and errors come from
//! [`PgUrl::parse`], which never quotes the URL.

use serde::Deserialize;

use super::ConfigError;
use crate::cli::ServeArgs;
use crate::store::StoreLocation;
use crate::store::postgres::PgUrl;

/// `[store]` of `mcpgw.toml`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// `url = "postgres://..."`; SQLite in the data directory when absent.
    pub url: Option<String>,
    /// `advertise = "https://gw-1.internal:8443"`: where the other instances on the store
    /// reach this one (a legacy SSE session's messages are forwarded to the instance holding
    /// its stream). Default: the listen address, when it names one host.
    pub advertise: Option<String>,
    /// `peer_ca = "/etc/mcpgw/ca.pem"`: the CA the other instances' HTTPS certificates are
    /// checked against. Default: the platform's roots.
    pub peer_ca: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a database password.
        f.debug_struct("FileStore")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("advertise", &self.advertise)
            .field("peer_ca", &self.peer_ca)
            .finish()
    }
}

/// `--store` / `MCPGW_STORE`, else `[store] url`, else SQLite in the data directory.
pub(super) fn resolve(
    args: &ServeArgs,
    file: &FileStore,
    origin: &str,
) -> Result<StoreLocation, ConfigError> {
    let (text, setting) = match (&args.store, &file.url) {
        (Some(flag), _) => (&flag.0, "--store (or MCPGW_STORE)".to_owned()),
        (None, Some(url)) => (url, format!("{origin}: `store.url`")),
        (None, None) => return Ok(StoreLocation::DataDir),
    };
    PgUrl::parse(text)
        .map(|url| StoreLocation::Postgres(Box::new(url)))
        .map_err(|error| ConfigError::Store { setting, error })
}

/// `--advertise` (or `MCPGW_ADVERTISE`), else `[store] advertise`, checked: an `http` or
/// `https` URL of a host and port, nothing more.
pub(super) fn advertise(
    args: &ServeArgs,
    file: &FileStore,
    origin: &str,
) -> Result<Option<url::Url>, ConfigError> {
    let (text, origin, key) = match (&args.advertise, &file.advertise) {
        (Some(flag), _) => (flag, "--advertise (or MCPGW_ADVERTISE)", "advertise"),
        (None, Some(text)) => (text, origin, "store.advertise"),
        (None, None) => return Ok(None),
    };
    let bad = || ConfigError::Field {
        origin: origin.to_owned(),
        key,
        expected: "an http:// or https:// URL of this instance's host and port, without a path",
        got: text.clone(),
    };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain {
        return Err(bad());
    }
    Ok(Some(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::StoreUrlArg;

    fn file(url: &str) -> FileStore {
        FileStore {
            url: Some(url.to_owned()),
            ..FileStore::default()
        }
    }

    #[test]
    fn an_advertised_address_is_a_host_and_port_url() {
        let with = |text: &str| FileStore {
            advertise: Some(text.to_owned()),
            ..FileStore::default()
        };
        let none = ServeArgs::default();
        assert_eq!(advertise(&none, &FileStore::default(), "f").unwrap(), None);
        let file = with("https://gw-1.internal:8443");
        let url = advertise(&none, &file, "f").unwrap().unwrap();
        assert_eq!(url.as_str(), "https://gw-1.internal:8443/");
        for bad in [
            "gw-1:8443",
            "ftp://gw-1",
            "https://gw-1/mcp",
            "https://u:p@gw-1",
        ] {
            let err = advertise(&none, &with(bad), "mcpgw.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("mcpgw.toml") && err.contains("store.advertise"),
                "{err}"
            );
        }
        // The flag (or its variable) beats the file, and is checked the same way.
        let flag = |text: &str| ServeArgs {
            advertise: Some(text.to_owned()),
            ..ServeArgs::default()
        };
        let url = advertise(&flag("http://10.0.0.7:8080"), &file, "f")
            .unwrap()
            .unwrap();
        assert_eq!(url.as_str(), "http://10.0.0.7:8080/");
        let err = advertise(&flag("10.0.0.7"), &file, "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("MCPGW_ADVERTISE"), "{err}");
    }

    #[test]
    fn sqlite_in_the_data_dir_unless_a_url_is_given() {
        let none = resolve(&ServeArgs::default(), &FileStore::default(), "defaults").unwrap();
        assert!(matches!(none, StoreLocation::DataDir));
        let from_file = resolve(&ServeArgs::default(), &file("postgres://a@h/one"), "f").unwrap();
        assert!(
            matches!(from_file, StoreLocation::Postgres(url) if url.to_string() == "postgres://a@h/one")
        );
    }

    #[test]
    fn the_flag_beats_the_file() {
        let args = ServeArgs {
            store: Some(StoreUrlArg("postgres://a@h/two".into())),
            ..ServeArgs::default()
        };
        let got = resolve(&args, &file("postgres://a@h/one"), "f").unwrap();
        assert!(
            matches!(got, StoreLocation::Postgres(url) if url.to_string() == "postgres://a@h/two")
        );
    }

    #[test]
    fn a_bad_url_names_where_it_was_given_and_not_its_password() {
        let err = resolve(
            &ServeArgs::default(),
            &file("postgres://a:pw-77@h/"),
            "mcpgw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("mcpgw.toml: `store.url`: the URL has no database name"),
            "{err}"
        );
        assert!(!err.contains("pw-77"), "{err}");
        let debug = format!("{:?}", file("postgres://a:pw-77@h/db"));
        assert!(!debug.contains("pw-77"), "{debug}");
    }
}
