//! A registration as both backends store it: the configuration as columns of plain values
//! (enums as their text forms, TLS, auth and command as JSON text), decoded back into a
//! [`Registration`] with one set of checks, whichever database the row came from.
//!
//! Error messages name registrations and columns but never carry stored values: a row holds
//! tokens, header values and PEM keys, and some decoders (serde_json) quote the input they reject.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    CommandSpec, EraChoice, Health, HealthStatus, Registration, StoreError, TlsSettings, Transport,
    UpstreamAuth,
};

/// The column list shared by every SELECT and INSERT of both backends, in [`RawRow`]'s order.
macro_rules! columns {
    () => {
        "name, url, transport, tls, auth, enabled, created_at, updated_at, health_status, \
         health_since, health_last_success, health_last_error, health_consecutive_failures, era, \
         shared_session, command"
    };
}
pub(super) use columns;

/// The JSON columns of a registration, encoded for a write.
pub(super) struct Encoded {
    /// `tls`.
    pub tls: String,
    /// `auth`.
    pub auth: String,
    /// `command`: the program of a stdio upstream, NULL otherwise.
    pub command: Option<String>,
}

impl Encoded {
    pub(super) fn of(r: &Registration) -> Result<Self, StoreError> {
        Ok(Self {
            tls: to_json(&r.name, "tls", &r.tls)?,
            auth: to_json(&r.name, "auth", &r.auth)?,
            command: command_json(r)?,
        })
    }
}

/// A row as stored, before the text columns are parsed.
pub(super) struct RawRow {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) transport: String,
    pub(super) tls: String,
    pub(super) auth: String,
    pub(super) enabled: bool,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) health_status: String,
    pub(super) health_since: i64,
    pub(super) health_last_success: Option<i64>,
    pub(super) health_last_error: Option<String>,
    pub(super) health_consecutive_failures: i64,
    pub(super) era: String,
    pub(super) shared_session: bool,
    pub(super) command: Option<String>,
}

impl RawRow {
    pub(super) fn decode(self) -> Result<Registration, StoreError> {
        let name = self.name;
        let transport = match self.transport.as_str() {
            "sse" => Transport::Sse,
            "streamable-http" => Transport::StreamableHttp,
            "stdio" => Transport::Stdio,
            _ => return Err(corrupt(&name, "transport", "holds an unknown transport")),
        };
        let status = match self.health_status.as_str() {
            "unknown" => HealthStatus::Unknown,
            "online" => HealthStatus::Online,
            "offline" => HealthStatus::Offline,
            _ => return Err(corrupt(&name, "health_status", "holds an unknown status")),
        };
        let consecutive_failures = u32::try_from(self.health_consecutive_failures)
            .map_err(|_| corrupt(&name, "health_consecutive_failures", "is out of range"))?;
        let era = EraChoice::parse(&self.era)
            .ok_or_else(|| corrupt(&name, "era", "holds an unknown protocol era"))?;
        let tls: TlsSettings = from_json(&name, "tls", &self.tls)?;
        let auth: UpstreamAuth = from_json(&name, "auth", &self.auth)?;
        let command: Option<CommandSpec> = match &self.command {
            Some(text) => Some(from_json(&name, "command", text)?),
            None => None,
        };
        if (transport == Transport::Stdio) != command.is_some() {
            return Err(corrupt(&name, "command", "does not match the transport"));
        }
        Ok(Registration {
            url: self.url,
            transport,
            tls,
            auth,
            enabled: self.enabled,
            era,
            shared_session: self.shared_session,
            command,
            created_at: self.created_at,
            updated_at: self.updated_at,
            health: Health {
                status,
                since: self.health_since,
                last_success: self.health_last_success,
                last_error: self.health_last_error,
                consecutive_failures,
            },
            name,
        })
    }
}

/// The `command` column of `r`: its program as JSON for a stdio upstream, NULL otherwise.
fn command_json(r: &Registration) -> Result<Option<String>, StoreError> {
    r.command
        .as_ref()
        .map(|c| to_json(&r.name, "command", c))
        .transpose()
}

fn to_json<T: Serialize>(name: &str, column: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Query {
        // Serialising these plain structs cannot really fail; the category is enough.
        detail: format!(
            "registration '{name}': cannot encode column {column} ({:?} error)",
            e.classify()
        ),
    })
}

fn from_json<T: DeserializeOwned>(name: &str, column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json's own message quotes the offending value (`invalid type: string "..."`),
        // which may be a token or a key; report only the kind of damage and where it is.
        let kind = match e.classify() {
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Io => "unreadable JSON",
        };
        corrupt(
            name,
            column,
            &format!("holds {kind} (line {}, column {})", e.line(), e.column()),
        )
    })
}

fn corrupt(name: &str, column: &str, what: &str) -> StoreError {
    StoreError::Query {
        detail: format!("registration '{name}': column {column} {what}"),
    }
}

pub(super) fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        name: name.to_owned(),
    }
}

/// `changed` rows from a statement keyed by the primary key: 0 means the name is absent.
pub(super) fn expect_one(changed: u64, name: &str) -> Result<(), StoreError> {
    if changed == 0 {
        Err(not_found(name))
    } else {
        Ok(())
    }
}
