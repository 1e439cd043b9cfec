//! What `gateways` shows of an upstream: its registration, TLS and auth settings without their
//! secrets, its health, era and catalog.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::{Upstream, connection, rfc3339};
use crate::store::PemSource;

impl Upstream {
    /// A JSON view without secrets.
    pub fn view(&self) -> Value {
        let reg = self.reg.load();
        let conn = self.conn.load_full();
        let catalog = self.catalog.load();
        let source = |s: &Option<PemSource>| match s {
            Some(PemSource::Path(p)) => json!(p.display().to_string()),
            Some(PemSource::Inline(_)) => json!("(inline PEM)"),
            None => Value::Null,
        };
        let client = conn.as_ref().and_then(|c| c.client());
        let legacy = client
            .is_some_and(|c| c.observations.legacy_cn_accepted.load(Ordering::Relaxed))
            || self.legacy_warned.load(Ordering::Relaxed);
        let h = self.health();
        let (client_sessions, _) = self.client_sessions();
        // A stdio upstream's program, its variables by name only (their values are secrets).
        let command = reg.command.as_ref().map(|c| {
            json!({
                "program": c.program,
                "args": c.args,
                "env": c.env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                "env_file": c.env_file.as_ref().map(|p| p.display().to_string()),
                "cwd": c.cwd.as_ref().map(|p| p.display().to_string()),
                "isolate": c.isolate,
                "inherit_env": c.inherit_env,
                "limits": c.limits,
                "pid": conn.as_ref().and_then(|c| c.pid()),
            })
        });
        json!({
            "name": reg.name,
            "url": reg.url,
            "transport": reg.transport.as_str(),
            "command": command,
            "enabled": reg.enabled,
            "tls": {
                "ca_cert": source(&reg.tls.ca),
                "client_cert": source(&reg.tls.client_cert),
                "client_key": source(&reg.tls.client_key).as_str().map(|_| "(set)"),
                "server_name": reg.tls.server_name,
                "client_subject": client.and_then(|c| c.identity.client_subject()),
            },
            "auth": {
                "bearer": reg.auth.bearer.is_some(),
                "headers": reg.auth.headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            },
            "health": {
                "status": h.status.as_str(),
                "since": rfc3339(h.since),
                "last_success": h.last_success.map(rfc3339),
                "last_error": h.last_error,
                "consecutive_failures": h.consecutive_failures,
            },
            "protocol_version": conn.as_ref().map(|c| c.era.version().to_owned()),
            "era": conn.as_ref().map(|c| match c.era { connection::Era::Session { .. } => "session", connection::Era::Stateless { .. } => "stateless" }),
            "server_info": conn.as_ref().map(|c| c.server_info.clone()),
            "era_setting": reg.era.as_str(),
            "shared_session": reg.shared_session,
            "client_sessions": client_sessions,
            "tools": catalog.tools.iter().filter_map(super::Entry::key).collect::<Vec<_>>(),
            "resources": catalog.resources.len(),
            "prompts": catalog.prompts.len(),
            "warnings": if legacy { vec!["legacy CN-only certificate accepted; reissue with SANs"] } else { Vec::new() },
            "created_at": rfc3339(reg.created_at),
            "updated_at": rfc3339(reg.updated_at),
        })
    }
}
