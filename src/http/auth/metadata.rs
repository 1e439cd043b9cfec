//! What the listener tells OAuth clients of itself (the MCP authorization spec): its protected
//! resource metadata (RFC 9728), served without a token at
//! `/.well-known/oauth-protected-resource` for the gateway and at the path-suffixed form for
//! each MCP endpoint (`/.well-known/oauth-protected-resource/mcp`, …), and the
//! `WWW-Authenticate` challenge of every refusal, which points at that metadata.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::Refused;
use crate::access::MCP_ENDPOINTS;
use crate::http::AppState;

/// Where the metadata is: the gateway's at this path, an endpoint's at this path followed by
/// the endpoint's.
pub const PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The route templates of the metadata documents.
pub fn routes() -> impl Iterator<Item = String> {
    std::iter::once(PREFIX.to_owned()).chain(MCP_ENDPOINTS.iter().map(|e| format!("{PREFIX}{e}")))
}

/// Whether `route` is one of [`routes`] (served to anyone).
pub fn is_metadata_route(route: &str) -> bool {
    route
        .strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || MCP_ENDPOINTS.contains(&rest))
}

/// `GET` of a metadata document: the resource it describes is the gateway's resource followed
/// by the path after [`PREFIX`] (RFC 9728 section 3.1), so a client checking that the two
/// match (section 3.3) finds they do.
pub async fn document(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let suffix = uri.path().strip_prefix(PREFIX).unwrap_or("");
    let auth = &state.auth;
    let body = serde_json::json!({
        "resource": format!("{}{suffix}", auth.resource()),
        "authorization_servers": auth.issuers().map(|i| i.id()).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "scopes_supported": auth.scopes_supported(),
        "resource_name": "mcpgw",
    });
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        )],
        axum::Json(body),
    )
        .into_response()
}

/// The absolute URL of the metadata for a request to `path`, which matched `route`: the
/// endpoint's own for an MCP endpoint, the gateway's for any other route.
pub fn url_for(resource: &str, route: &str, path: &str) -> String {
    if MCP_ENDPOINTS.contains(&route) {
        format!("{resource}{PREFIX}{path}")
    } else {
        format!("{resource}{PREFIX}")
    }
}

/// The response refusing a request: 401 with a challenge naming the metadata (and
/// `error="invalid_token"` for a token that was presented); 403 with
/// `error="insufficient_scope"` (RFC 6750 section 3). Both name the scopes that would do:
/// `scopes`, what the route needs (the client scopes on an MCP endpoint, the admin scopes
/// elsewhere), so that a client asks its authorization server for no more than that. The JSON
/// body says what was missing either way.
pub fn refusal(refused: &Refused, metadata: &str, scopes: &str) -> Response {
    let message = refused.to_string();
    let (status, code, error) = match refused {
        Refused::Missing => (StatusCode::UNAUTHORIZED, "unauthorized", None),
        Refused::Invalid => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("invalid_token"),
        ),
        Refused::Forbidden { .. } | Refused::Unentitled { .. } => (
            StatusCode::FORBIDDEN,
            "forbidden",
            Some("insufficient_scope"),
        ),
    };
    let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
    if let Some(error) = error {
        challenge.push_str(&format!(", error=\"{error}\""));
    }
    if !scopes.is_empty() {
        challenge.push_str(&format!(", scope=\"{scopes}\""));
    }
    let mut response = (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    // Every part is the gateway's own text: URLs, and scope names from the configuration.
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mcp_endpoint_has_its_metadata_and_other_routes_the_gateways() {
        assert!(is_metadata_route(PREFIX));
        assert!(is_metadata_route(
            "/.well-known/oauth-protected-resource/servers/{name}/mcp"
        ));
        assert!(!is_metadata_route(
            "/.well-known/oauth-protected-resource/gateways"
        ));
        assert!(!is_metadata_route("/gateways"));
        assert_eq!(routes().count(), MCP_ENDPOINTS.len() + 1);
        let gw = "https://gw.example";
        assert_eq!(
            url_for(gw, "/servers/{name}/mcp", "/servers/alpha/mcp"),
            "https://gw.example/.well-known/oauth-protected-resource/servers/alpha/mcp"
        );
        assert_eq!(
            url_for(gw, "/gateways", "/gateways"),
            "https://gw.example/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn a_scope_value_is_quoted_and_left_out_when_there_is_none() {
        let forbidden = Refused::Forbidden {
            principal: "jwt:c".into(),
            role: crate::access::Role::Client,
            needed: crate::access::Role::Admin,
        };
        let response = refusal(&forbidden, "https://gw/m", "mcpgw:admin");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer resource_metadata=\"https://gw/m\", error=\"insufficient_scope\", scope=\"mcpgw:admin\""
        );
        let response = refusal(&Refused::Missing, "https://gw/m", "");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer resource_metadata=\"https://gw/m\""
        );
    }
}
