//! `/gateways`: register, list, show, update and remove upstreams.
//!
//! Accepts mcpgw's own fields and, so users can bring their scripts, the NET-01 report's JSON
//! (`"tls_config": {"ca_cert", "client_cert", "client_key"}`) and the flat fields of the gateway
//! mcpgw replaces (`ca_certificate`, `client_cert`, `client_key`, `auth_type`/`auth_token`).
//! Answers never contain secrets: tokens, header values and inline PEM are reduced to "set".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::access::{Method, Principal};
use crate::destination::UrlPolicy;
use crate::store::{
    CommandSpec, EraChoice, Health, PemSource, ProcessLimits, Registration, StoreError,
    TlsSettings, Transport, UpstreamAuth, valid_name,
};
use crate::upstream::headers::{AuthHeaderError, auth_headers};
use crate::upstream::registry::RegisterError;

/// Nested TLS settings as in the report.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfigBody {
    /// CA bundle path or PEM.
    pub ca_cert: Option<String>,
    /// Client certificate path or PEM.
    pub client_cert: Option<String>,
    /// Client key path or PEM.
    pub client_key: Option<String>,
    /// Server-name override.
    pub server_name: Option<String>,
}

/// Name/value pairs as an object or as lines: headers (`"K: V"`), environment variables
/// (`"K=V"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PairsBody {
    /// `{"K": "V"}`.
    Map(BTreeMap<String, String>),
    /// `["K: V"]` or `["K=V"]`.
    Lines(Vec<String>),
}

impl PairsBody {
    /// The pairs, each line split at `separator`; `field` and `expected` name what a line
    /// without it should have been.
    fn pairs(
        self,
        separator: char,
        field: &'static str,
        expected: &str,
    ) -> Result<Vec<(String, String)>, BodyError> {
        match self {
            Self::Map(map) => Ok(map.into_iter().collect()),
            Self::Lines(lines) => lines
                .iter()
                .map(|line| {
                    line.split_once(separator)
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| BodyError {
                            field,
                            message: format!("expected '{expected}' lines"),
                        })
                })
                .collect(),
        }
    }
}

/// `POST /gateways` body. Every field is declared, the stdio ones included: a misspelt or
/// unknown field is refused naming it (a `flatten`ed catch-all would turn that check off).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Name.
    pub name: String,
    /// URL; absent (or empty) for a stdio upstream, which has a `command` instead.
    #[serde(default)]
    pub url: String,
    /// A stdio upstream's program.
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment variables (values secret).
    pub env: Option<PairsBody>,
    /// A file of `K=V` lines for its environment, read at each start.
    pub env_file: Option<PathBuf>,
    /// Its working directory.
    pub cwd: Option<PathBuf>,
    /// One child per downstream session.
    #[serde(default)]
    pub isolate: bool,
    /// The gateway's whole environment passed to it.
    #[serde(default)]
    pub inherit_env: bool,
    /// Its resource limits.
    #[serde(default)]
    pub limits: ProcessLimits,
    /// `sse`, `streamable-http` (also `SSE`, `STREAMABLEHTTP`); inferred from the URL when absent.
    pub transport: Option<String>,
    /// Nested TLS settings.
    pub tls_config: Option<TlsConfigBody>,
    /// Flat CA (replaced gateway's name).
    pub ca_certificate: Option<String>,
    /// Flat CA (mcpgw's name).
    pub ca_cert: Option<String>,
    /// Flat client certificate.
    pub client_cert: Option<String>,
    /// Flat client key.
    pub client_key: Option<String>,
    /// Server-name override.
    pub server_name: Option<String>,
    /// `bearer` or `none` (replaced gateway).
    pub auth_type: Option<String>,
    /// Token for `auth_type = bearer`.
    pub auth_token: Option<String>,
    /// Bearer token (mcpgw's name).
    pub bearer: Option<String>,
    /// Extra headers.
    pub headers: Option<PairsBody>,
    /// Enabled (default true).
    pub enabled: Option<bool>,
    /// Protocol era: `auto` (default), `2025-11-25` or `2026-07-28`.
    pub era: Option<String>,
    /// One upstream session for every client (default false: one per downstream session).
    #[serde(default)]
    pub shared_session: bool,
    /// Store even if the upstream cannot be reached now.
    #[serde(default)]
    pub defer: bool,
    /// Accepted and ignored: clients of the gateway mcpgw replaces send it.
    pub description: Option<Value>,
    /// Accepted and ignored, as `description`.
    pub tags: Option<Value>,
}

impl std::fmt::Debug for RegisterBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterBody")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A user-facing refusal of the request body.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BodyError {
    /// Offending field.
    pub field: &'static str,
    /// What was expected.
    pub message: String,
}

fn pem_source(value: &str) -> PemSource {
    if value.trim_start().starts_with("-----BEGIN") {
        PemSource::Inline(value.to_owned())
    } else {
        PemSource::Path(PathBuf::from(value))
    }
}

fn parse_transport(text: Option<&str>, url: &str) -> Result<Transport, BodyError> {
    match text.map(|t| t.to_ascii_lowercase().replace(['-', '_'], "")) {
        Some(t) if t == "sse" => Ok(Transport::Sse),
        Some(t) if t == "streamablehttp" || t == "http" => Ok(Transport::StreamableHttp),
        Some(_) => Err(BodyError {
            field: "transport",
            message: "expected \"sse\" or \"streamable-http\"".into(),
        }),
        None => Ok(if url.trim_end_matches('/').ends_with("/sse") {
            Transport::Sse
        } else {
            Transport::StreamableHttp
        }),
    }
}

fn parse_era(text: Option<&str>) -> Result<EraChoice, BodyError> {
    match text {
        None => Ok(EraChoice::Auto),
        Some(text) => EraChoice::parse(text).ok_or_else(|| BodyError {
            field: "era",
            message: format!("'{text}' is not an era; expected auto, 2025-11-25 or 2026-07-28"),
        }),
    }
}

impl RegisterBody {
    /// Validate into a registration (health unknown, times set by the registry), its URL's host
    /// judged by `destinations`.
    pub fn into_registration(
        self,
        destinations: &UrlPolicy,
    ) -> Result<(Registration, bool), BodyError> {
        if !valid_name(&self.name) {
            return Err(BodyError {
                field: "name",
                message: format!(
                    "invalid upstream name '{}': expected 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit, without '__'",
                    self.name
                ),
            });
        }
        if self.command.is_some() {
            return self.into_stdio();
        }
        let url = url::Url::parse(&self.url).map_err(|e| BodyError {
            field: "url",
            message: format!("expected an http(s) URL ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BodyError {
                field: "url",
                message: "expected an http:// or https:// URL".into(),
            });
        }
        refuse_credentials_in(&url)?;
        if let Some(host) = url.host() {
            destinations
                .check_host(&host)
                .map_err(|refused| BodyError {
                    field: "url",
                    message: refused.to_string(),
                })?;
        }
        let transport = parse_transport(self.transport.as_deref(), &self.url)?;
        let nested = self.tls_config.unwrap_or_default();
        let ca = nested.ca_cert.or(self.ca_cert).or(self.ca_certificate);
        let client_cert = nested.client_cert.or(self.client_cert);
        let client_key = nested.client_key.or(self.client_key);
        let tls = TlsSettings {
            ca: ca.as_deref().map(pem_source),
            client_cert: client_cert.as_deref().map(pem_source),
            client_key: client_key.as_deref().map(pem_source),
            server_name: nested.server_name.or(self.server_name),
        };
        let bearer = match self
            .auth_type
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("bearer") => self.bearer.or(self.auth_token),
            Some("none" | "") => None,
            Some(other) => {
                return Err(BodyError {
                    field: "auth_type",
                    message: format!(
                        "unsupported auth_type '{other}': expected \"bearer\" or \"none\""
                    ),
                });
            }
        };
        let headers: Vec<(String, String)> = match self.headers {
            None => Vec::new(),
            Some(headers) => headers
                .pairs(':', "headers", "Name: value")?
                .into_iter()
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        };
        let auth = UpstreamAuth { bearer, headers };
        // The same check every connection's headers go through.
        if let Err(err) = auth_headers(&auth) {
            return Err(BodyError {
                field: if matches!(err, AuthHeaderError::Bearer) {
                    "auth_token"
                } else {
                    "headers"
                },
                message: err.to_string(),
            });
        }
        let era = parse_era(self.era.as_deref())?;
        let reg = Registration {
            name: self.name,
            url: self.url,
            transport,
            tls,
            auth,
            enabled: self.enabled.unwrap_or(true),
            era,
            shared_session: self.shared_session,
            command: None,
            created_at: 0,
            updated_at: 0,
            health: Health::unknown(0),
        };
        Ok((reg, self.defer))
    }

    /// A stdio upstream's registration: its program instead of a URL.
    fn into_stdio(self) -> Result<(Registration, bool), BodyError> {
        let program = self.command.unwrap_or_default();
        if !self.url.is_empty() {
            return Err(BodyError {
                field: "url",
                message: "give either a url or a command, not both".into(),
            });
        }
        // The program, arguments and variables are judged where every way in is
        // (`CommandSpec::check`, at registration).
        let env = match self.env {
            None => Vec::new(),
            Some(env) => env.pairs('=', "env", "NAME=value")?,
        };
        for (field, path) in [("env_file", &self.env_file), ("cwd", &self.cwd)] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(BodyError {
                    field,
                    message: "expected an absolute path".into(),
                });
            }
        }
        let era = parse_era(self.era.as_deref())?;
        let command = CommandSpec {
            program,
            args: self.args,
            env,
            env_file: self.env_file,
            cwd: self.cwd,
            isolate: self.isolate,
            inherit_env: self.inherit_env,
            limits: self.limits,
        };
        let reg = Registration {
            name: self.name,
            url: String::new(),
            transport: Transport::Stdio,
            tls: TlsSettings::default(),
            auth: UpstreamAuth::default(),
            enabled: self.enabled.unwrap_or(true),
            era,
            shared_session: !self.isolate,
            command: Some(command),
            created_at: 0,
            updated_at: 0,
            health: Health::unknown(0),
        };
        Ok((reg, self.defer))
    }
}

/// An error answer in the admin API's shape.
pub fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The answer to a refusal of the store (taken name, unknown name, ...).
pub fn store_error(err: &StoreError) -> Response {
    let status = match err {
        StoreError::Exists { .. } => StatusCode::CONFLICT,
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::InvalidName { .. } => StatusCode::BAD_REQUEST,
        // The database is away for now (a shared store): worth retrying, nothing was changed.
        StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    api_error(status, "store", err.to_string())
}

/// Registering a command runs a program on this host as the gateway's user. The control
/// socket (reachable only by that user) may; the HTTP listener only where the operator opted in
/// with `[upstreams] allow_commands_over_http`, and then only for admins (the front gate's role
/// check stands before every `/gateways` write).
fn refusal_to_register(
    state: &AppState,
    principal: &Principal,
    reg: &Registration,
) -> Option<Response> {
    let over_http = principal.method != Method::ControlSocket;
    if reg.transport == Transport::Stdio
        && over_http
        && !state.registry.settings().allow_commands_over_http
    {
        return Some(api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "registering a command runs it on the gateway's host: use `mcpgw gateway add --command` \
             (the control socket), declare it in mcpgw.toml ([[upstream]]), or set [upstreams] \
             allow_commands_over_http = true",
        ));
    }
    None
}

/// A registration body, or the 400 answer with serde's reason (for an unknown field: its name
/// and the fields there are), for `POST` and `PUT` alike.
fn read_body(
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<RegisterBody, Box<Response>> {
    body.map(|Json(b)| b).map_err(|rejection| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            rejection.body_text(),
        ))
    })
}

/// `POST /gateways`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    let (reg, defer) = match body.into_registration(state.registry.clients().url_policy()) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if let Some(refused) = refusal_to_register(&state, &principal, &reg) {
        return refused;
    }
    match state.registry.register(reg, defer).await {
        Ok(up) => (StatusCode::CREATED, Json(up.view())).into_response(),
        Err(RegisterError::Store(e)) => store_error(&e),
        Err(e @ RegisterError::Invalid { .. }) => {
            api_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        Err(e @ RegisterError::Unreachable { .. }) => api_error(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            e.to_string(),
        ),
    }
}

/// `GET /gateways`.
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(Value::Array(
        state.registry.list().iter().map(|u| u.view()).collect(),
    ))
}

/// `GET /gateways/{name}`.
pub async fn show(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.registry.get(&name) {
        Some(up) => Json(up.view()).into_response(),
        None => store_error(&StoreError::NotFound { name }),
    }
}

/// `PUT /gateways/{name}`: replace the registration (remove + register, keeping the name).
pub async fn replace(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Path(name): Path<String>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Response {
    let mut body = match read_body(body) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    if state.registry.get(&name).is_none() {
        return store_error(&StoreError::NotFound { name });
    }
    body.name = name.clone();
    let (reg, defer) = match body.into_registration(state.registry.clients().url_policy()) {
        Ok(r) => r,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if let Some(refused) = refusal_to_register(&state, &principal, &reg) {
        return refused;
    }
    // Validate the new settings (and the upstream) before touching the stored one.
    if let Err(e) = state.registry.check_settings(&reg).await {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", e.to_string());
    }
    if !defer {
        let probe_reg = Registration {
            name: format!("{name}-check"),
            ..reg.clone()
        };
        if let Err(e) = state.registry.check_reachable(&probe_reg).await {
            return api_error(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("cannot update '{name}': {e}"),
            );
        }
    }
    if let Err(e) = state.registry.remove(&name).await {
        return store_error(&e);
    }
    match state.registry.register(reg, true).await {
        Ok(up) => Json(up.view()).into_response(),
        Err(RegisterError::Store(e)) => store_error(&e),
        Err(e) => api_error(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            e.to_string(),
        ),
    }
}

/// `DELETE /gateways/{name}`.
pub async fn remove(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.registry.remove(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(&e),
    }
}

/// Query parameters that carry a credential by their name (compared without regard to case).
const CREDENTIAL_PARAMS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "access_token",
    "token",
    "auth",
    "password",
    "secret",
    "client_secret",
];

/// A URL is stored and shown (`GET /gateways`, `gateway list`, logs) as it is: credentials in it
/// would be too. Refused, naming where they belong instead; the value is never echoed.
fn refuse_credentials_in(url: &url::Url) -> Result<(), BodyError> {
    let instead = "pass it as a bearer token (\"bearer\", `gateway add --bearer`) or a header (\"headers\", `gateway add --header`)";
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BodyError {
            field: "url",
            message: format!("credentials in the URL (user:password@) are not accepted: {instead}"),
        });
    }
    if let Some((key, _)) = url
        .query_pairs()
        .find(|(k, _)| CREDENTIAL_PARAMS.iter().any(|c| c.eq_ignore_ascii_case(k)))
    {
        return Err(BodyError {
            field: "url",
            message: format!(
                "the URL's query parameter '{key}' looks like a credential, which is not accepted in a URL: {instead}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RegisterBody;
    use serde_json::json;

    #[test]
    fn a_misspelt_field_is_refused_naming_it_and_the_stdio_fields_are_declared() {
        for wrong in ["comand", "isloate", "inherit-env", "envFile"] {
            let body = json!({"name": "a", "command": "x", wrong: true});
            let err = serde_json::from_value::<RegisterBody>(body)
                .err()
                .unwrap_or_else(|| panic!("{wrong} accepted"))
                .to_string();
            assert!(err.contains(&format!("unknown field `{wrong}`")), "{err}");
        }
        let body = json!({"name": "a", "command": "x", "limits": {"memory": 64}});
        let err = serde_json::from_value::<RegisterBody>(body).err().unwrap();
        assert!(err.to_string().contains("unknown field `memory`"), "{err}");

        let body = json!({"name": "a", "command": "x", "args": ["-v"], "env": {"K": "v"},
            "env_file": "/e", "cwd": "/", "isolate": true, "inherit_env": true,
            "limits": {"open_files": 64}, "description": "d", "tags": ["t"]});
        let body: RegisterBody = serde_json::from_value(body).unwrap();
        assert!(body.isolate && body.inherit_env && body.env_file.is_some());
    }
}
