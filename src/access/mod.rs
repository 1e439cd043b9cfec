//! Who is asking, and what they may reach. Every request that passes the gate carries one
//! [`Principal`]: who it is (a stable id sessions and quotas are keyed by), its [`Role`], its
//! scopes, and how it proved itself. Whatever authenticated it (a static token, a built-in
//! HS256 JWT, an issuer's JWT, a client certificate, the control socket's peer check) ends
//! here, so the rules that follow (roles by route, policy, session ownership, quotas, the
//! audit log) are written once against this one type.

pub mod audit;
pub mod certificate;
pub mod glob;
pub mod policy;
pub mod quota;

use std::sync::Arc;

/// What a principal may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The MCP endpoints only.
    Client,
    /// Everything: the registry, certificates, admin routes, the console, and the MCP endpoints.
    Admin,
}

impl Role {
    /// The role's name, as in `token create --role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }

    /// The role named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "client" => Some(Self::Client),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A static token from the configuration.
    StaticToken,
    /// An HS256 JWT minted by `mcpgw token create`.
    Jwt,
    /// A JWT from a configured OAuth issuer, checked against its JWKS.
    Issuer,
    /// A client certificate verified by the listener's `--client-ca`.
    Certificate,
    /// The control socket (its file mode and the peer's uid).
    ControlSocket,
    /// Nothing: the listener runs with `--no-auth` (loopback only).
    None,
}

impl Method {
    /// The name the audit log and errors use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StaticToken => "static-token",
            Self::Jwt => "jwt",
            Self::Issuer => "oauth",
            Self::Certificate => "certificate",
            Self::ControlSocket => "control-socket",
            Self::None => "none",
        }
    }
}

/// Who a request is from. Cheap to share: requests hold an `Arc` of the one made when its
/// credential was first verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A stable id: what sessions are bound to and quotas counted by. Qualified by how it was
    /// proved (`jwt:alice`, `cert:spiffe://…`, `oauth:https://issuer#sub`), so one name from
    /// two sources is two principals.
    pub id: Arc<str>,
    /// What it may reach.
    pub role: Role,
    /// Scopes it carries (`--scope`, an access token's `scope`), for policy.
    pub scopes: Arc<[Box<str>]>,
    /// How it proved itself.
    pub method: Method,
    /// Further claims a policy rule may name (an issuer's token: `iss`, `azp`, groups …), as
    /// `name=value` pairs; empty for the other methods.
    pub claims: Arc<[(Box<str>, Box<str>)]>,
}

impl Principal {
    /// A principal with no scopes or claims.
    pub fn new(id: impl Into<Arc<str>>, role: Role, method: Method) -> Self {
        Self {
            id: id.into(),
            role,
            scopes: Arc::new([]),
            method,
            claims: Arc::new([]),
        }
    }

    /// The same, with these scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The local user of the control socket: an administrator (DESIGN.md).
    pub fn control() -> Arc<Self> {
        Arc::new(Self::new("control", Role::Admin, Method::ControlSocket))
    }

    /// Whoever reaches a listener that runs with `--no-auth` (loopback only): nothing is known
    /// of them, and nothing is withheld.
    pub fn anonymous() -> Arc<Self> {
        Arc::new(Self::new("anonymous", Role::Admin, Method::None))
    }

    /// Whether it may reach what `needed` may.
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }

    /// Whether it carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| &**s == scope)
    }
}

/// What the listener knows of a connection before any request on it: the peer's address and
/// the principal its verified client certificate names (found once, at the handshake).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The peer's address (`None` on the control socket).
    pub peer: Option<std::net::SocketAddr>,
    /// Who its client certificate says it is, when the listener asked for one and got it.
    pub certificate: Option<Arc<Principal>>,
}

/// The listener's MCP endpoints (route templates): what a client may reach, and what an OAuth
/// client finds protected resource metadata for (`http::auth::metadata`).
pub const MCP_ENDPOINTS: &[&str] = &[
    "/mcp",
    "/mcp/http",
    "/servers/{name}/mcp",
    "/sse",
    "/servers/{name}/sse",
    "/message",
    "/ws",
];

/// The role a route of the listener needs. Written as the list of what a client may reach, so
/// a route added later is an administrator's until it is listed here.
pub fn required_role(route: &str) -> Role {
    if MCP_ENDPOINTS.contains(&route) || route == "/ready" {
        Role::Client
    } else {
        Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mcp_endpoints_are_open_to_clients() {
        for route in ["/mcp", "/servers/{name}/mcp", "/sse", "/message", "/ws"] {
            assert_eq!(required_role(route), Role::Client, "{route}");
        }
        for route in [
            "/gateways",
            "/gateways/{name}",
            "/admin/status",
            "/admin/cert/install",
            "/admin/cert/reload",
            "/admin/cert/rotate-all",
            "/metrics",
            "/ui",
            "/a-route-added-later",
        ] {
            assert_eq!(required_role(route), Role::Admin, "{route}");
        }
    }

    #[test]
    fn an_admin_may_what_a_client_may_and_not_the_other_way() {
        let admin = Principal::new("a", Role::Admin, Method::Jwt);
        let client = Principal::new("c", Role::Client, Method::Jwt);
        assert!(admin.may(Role::Client) && admin.may(Role::Admin));
        assert!(client.may(Role::Client) && !client.may(Role::Admin));
    }
}
