//! The other instances on a shared store, for what only one instance can do: a legacy SSE
//! session lives in the instance holding its stream, yet a balancer without stickiness sends
//! its `POST /message` to any instance. The instance that opens such a session puts its own
//! address in the session id, sealed with a key every instance on the store derives from the
//! shared secret ([`Peers::mint`]); an instance given a message for a session it does not hold
//! reads the address back, checks the seal ([`Peers::owner_of`]) and forwards the request
//! there whole ([`Peers::forward`]), the client's credential included, so the owner judges it
//! as if it had come straight.
//!
//! The seal keeps a forged id from turning the gateway into a relay to an address of the
//! forger's choosing. A forwarded request says so (`mcpgw-forwarded`), and is never forwarded
//! again.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use url::Url;

/// The header a forwarded request carries: the forwarding instance's address.
pub const FORWARDED: &str = "mcpgw-forwarded";

/// Whether a request was passed on by another instance: it is served here, never passed on again.
pub fn was_forwarded(headers: &(impl crate::h1::fields::Lookup + ?Sized)) -> bool {
    headers
        .value(&http::HeaderName::from_static(FORWARDED))
        .is_some()
}

/// How long a peer has to start answering a forwarded request (a resumed call answers when its
/// upstream does, or starts a stream sooner).
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// This instance's place among its peers; empty on a store this instance has to itself.
#[derive(Clone, Default)]
pub struct Peers(Option<Arc<Inner>>);

struct Inner {
    /// Where the other instances reach this one.
    me: Url,
    /// The sealing key, the same on every instance of the store.
    key: hmac::Key,
    /// How to reach a peer over HTTPS (when this instance's own address is `https`).
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Peers")
            .field(&self.0.as_ref().map(|inner| inner.me.as_str()))
            .finish()
    }
}

/// Why forwarding could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The peer CA file cannot be used.
    #[error("`store.peer_ca` {path}: {detail}")]
    PeerCa {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

impl Peers {
    /// Peers of an instance reached at `me`, sealing with a key derived from `secret` (the
    /// store's shared secret); HTTPS peers verified against `peer_ca` (PEM), or the platform's
    /// roots when none is given, host names checked as always.
    pub fn new(
        me: Url,
        secret: &[u8],
        peer_ca: Option<&std::path::Path>,
    ) -> Result<Self, PeerError> {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&derive, b"mcpgw peer address seal v1").as_ref(),
        );
        let tls = if me.scheme() == "https" {
            Some(tls_connector(peer_ca)?)
        } else {
            None
        };
        Ok(Self(Some(Arc::new(Inner { me, key, tls }))))
    }

    /// The address peers reach this instance at, if it has peers.
    pub fn me(&self) -> Option<&Url> {
        self.0.as_ref().map(|inner| &inner.me)
    }

    /// A session id made of `random` that tells any peer where the session lives; `random`
    /// alone without peers.
    pub fn mint(&self, random: String) -> String {
        let Some(inner) = &self.0 else {
            return random;
        };
        let place = URL_SAFE_NO_PAD.encode(inner.me.as_str());
        let seal = inner.seal(&random, &place);
        format!("{random}.{place}.{seal}")
    }

    /// The peer holding session `id`, when the id names one (sealed by an instance of this
    /// store) other than this instance.
    pub fn owner_of(&self, id: &str) -> Option<Url> {
        let inner = self.0.as_ref()?;
        let mut parts = id.split('.');
        let (random, place, seal) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let given = URL_SAFE_NO_PAD.decode(seal).ok()?;
        // Checked in constant time, so the seal cannot be found byte by byte.
        hmac::verify(&inner.key, format!("{random}.{place}").as_bytes(), &given).ok()?;
        let url =
            Url::parse(std::str::from_utf8(&URL_SAFE_NO_PAD.decode(place).ok()?).ok()?).ok()?;
        (url != inner.me).then_some(url)
    }

    /// Send a `POST` this instance cannot serve to the peer at `to`, and relay its answer. A
    /// peer that cannot be reached (it died with its sessions) is answered as a session that
    /// is gone: 404.
    pub async fn forward(&self, to: &Url, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
        let Some(inner) = &self.0 else {
            return gone("no peers");
        };
        match tokio::time::timeout(PEER_TIMEOUT, inner.send(to, uri, headers, body)).await {
            Ok(Ok(response)) => response,
            Ok(Err(why)) => {
                tracing::info!(peer = %to, error = %why, "the instance holding a session cannot be reached; the session is gone");
                gone("the instance holding it is gone")
            }
            Err(_) => {
                tracing::warn!(peer = %to, "the instance holding a session did not answer in time");
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "the instance holding the session did not answer in time",
                )
                    .into_response()
            }
        }
    }
}

impl Inner {
    fn seal(&self, random: &str, place: &str) -> String {
        let tag = hmac::sign(&self.key, format!("{random}.{place}").as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    async fn send(
        &self,
        to: &Url,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, String> {
        let host = to.host_str().ok_or("the peer address has no host")?;
        let port = to
            .port_or_known_default()
            .ok_or("the peer address has no port")?;
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
        // The body's length is its own: it may be written anew, not the client's bytes.
        for (name, value) in headers {
            if !is_hop_by_hop(name) && name != http::header::CONTENT_LENGTH {
                request = request.header(name, value);
            }
        }
        let me = HeaderValue::from_str(self.me.as_str()).map_err(|e| e.to_string())?;
        let request = request
            .header(FORWARDED, me)
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("peer name {host}: {e}"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                exchange(stream, request).await?
            }
            None => exchange(tcp, request).await?,
        };
        // The body is passed on as it comes: a resumed call may stream its events.
        let (parts, body) = response.into_parts();
        let mut relayed = Response::new(Body::new(body));
        *relayed.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) && name != http::header::CONTENT_LENGTH {
                relayed.headers_mut().append(name, value.clone());
            }
        }
        Ok(relayed)
    }
}

/// One request on a fresh HTTP/1.1 connection.
async fn exchange<S>(
    io: S,
    request: http::Request<http_body_util::Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}

/// Headers that belong to one connection and are not passed on.
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    [
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == FORWARDED
}

fn gone(why: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("could not find session ({why})"),
    )
        .into_response()
}

/// A TLS connector trusting `peer_ca`, or the platform's roots.
fn tls_connector(
    peer_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, PeerError> {
    let mut roots = rustls::RootCertStore::empty();
    match peer_ca {
        Some(path) => {
            let fail = |detail: String| PeerError::PeerCa {
                path: path.display().to_string(),
                detail,
            };
            let certs = crate::tls::pem::certs_from_file(path).map_err(|e| fail(e.to_string()))?;
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PeerError::PeerCa {
        path: String::new(),
        detail: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(me: &str, secret: &[u8]) -> Peers {
        Peers::new(Url::parse(me).unwrap(), secret, None).unwrap()
    }

    #[test]
    fn an_id_names_the_instance_that_minted_it_to_its_peers_only() {
        let a = peers("http://127.0.0.1:7001/", b"fleet secret");
        let b = peers("http://127.0.0.1:7002/", b"fleet secret");
        let id = a.mint("0123abcd".into());
        assert!(id.starts_with("0123abcd."), "{id}");
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)),
            "{id} must go in a query string as it is"
        );
        assert_eq!(b.owner_of(&id).unwrap().as_str(), "http://127.0.0.1:7001/");
        // Its own session is not forwarded.
        assert_eq!(a.owner_of(&id), None);
    }

    #[test]
    fn a_forged_or_foreign_id_names_no_one() {
        let a = peers("http://127.0.0.1:7001/", b"fleet secret");
        let b = peers("http://127.0.0.1:7002/", b"fleet secret");
        let other_fleet = peers("http://127.0.0.1:7003/", b"another secret");
        let id = a.mint("0123abcd".into());
        // Sealed with another fleet's key.
        assert_eq!(b.owner_of(&other_fleet.mint("0123abcd".into())), None);
        // The address swapped for one of the forger's choosing, seal kept.
        let parts: Vec<&str> = id.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode("http://203.0.113.9:80/");
        assert_eq!(
            b.owner_of(&format!("{}.{evil}.{}", parts[0], parts[2])),
            None
        );
        // The random part changed.
        assert_eq!(b.owner_of(&format!("ffff.{}.{}", parts[1], parts[2])), None);
        for junk in ["", "abc", "a.b", "a.b.c.d", "a.!!.c"] {
            assert_eq!(b.owner_of(junk), None, "{junk}");
        }
        // Without peers, an id is its random part and names no one.
        assert_eq!(Peers::default().mint("ab".into()), "ab");
        assert_eq!(Peers::default().owner_of(&id), None);
    }
}
