//! The one way to get an HTTP client for an upstream: `ClientCache::client_for`.
//!
//! Registration, health checks, sessions, listings and calls all come through here, so every
//! request to an upstream carries that upstream's full TLS identity. Clients are built once per
//! identity (keyed by the hash of its contents) and reused, with their connection pools.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

use super::identity::{IdentityError, PathPolicy, TlsIdentity};
use super::pool::Pool;
use super::tls::{self, TlsBuildError, TlsObservations};
use crate::store::TlsSettings;

/// Why no client could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TLS settings are unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The TLS config could not be built.
    #[error(transparent)]
    Tls(#[from] TlsBuildError),
    /// The URL is not usable.
    #[error("invalid upstream URL '{url}': {detail}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// reqwest refused the builder.
    #[error("cannot build the HTTP client: {detail}")]
    Build {
        /// reqwest's description.
        detail: String,
    },
}

/// An HTTP client bound to one TLS identity, and what its handshakes have seen.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// The general client (cheap to clone; shares its pool): the legacy SSE transport.
    pub http: reqwest::Client,
    /// Handshake observations for diagnosis.
    pub observations: Arc<TlsObservations>,
    /// The identity it was built for.
    pub identity: Arc<TlsIdentity>,
    /// The URL to send requests to (host replaced by the server name when dialling an IP).
    pub url: Url,
    /// Pooled HTTP/1.1 connections to the URL's origin with this identity (Streamable HTTP).
    pub pool: Arc<Pool>,
}

/// A built client, the observations its TLS config records into, and that config for HTTP/1.1.
type CachedClient = (
    reqwest::Client,
    Arc<TlsObservations>,
    Arc<rustls::ClientConfig>,
);

/// Clients by identity.
#[derive(Debug, Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<[u8; 32], CachedClient>>,
    /// Connection pools by identity and origin.
    pools: Mutex<HashMap<[u8; 32], Arc<Pool>>>,
    policy: PathPolicy,
    builds: std::sync::atomic::AtomicU64,
}

impl ClientCache {
    /// A cache that reads certificate files only under `policy`'s directories.
    pub fn new(policy: PathPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Close idle connections past their idle time in every pool, and forget the pools that
    /// no connection (upstream) holds any more.
    pub fn sweep(&self) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|_, pool| {
            pool.expire_idle();
            Arc::strong_count(pool) > 1
        });
    }

    /// How many connection pools exist (for tests).
    pub fn pools(&self) -> usize {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How many clients were built so far (each is a TLS context).
    pub fn builds(&self) -> u64 {
        self.builds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The client for `url` with `settings`. Files are read on every call, so a certificate
    /// rotated on disk yields a new identity and a new client; callers keep the result.
    pub fn client_for(
        &self,
        url: &str,
        settings: &TlsSettings,
    ) -> Result<UpstreamClient, ClientError> {
        let mut parsed = parse_url(url)?;
        let identity = TlsIdentity::load(settings, &self.policy)?;
        let pin = pin_server_name(url, &mut parsed, &identity)?;
        let key = client_key(&identity, pin.as_ref());
        let (http, observations, h1_config) = self.cached_client(key, &identity, pin.as_ref())?;
        let pool = self
            .pool_for(key, &parsed, pin.map(|(_, addr)| addr), h1_config)
            .map_err(|detail| url_error(url, &detail))?;
        Ok(UpstreamClient {
            http,
            observations,
            identity: Arc::new(identity),
            url: parsed,
            pool,
        })
    }

    /// The client built for `key`, building it (one TLS context) the first time.
    fn cached_client(
        &self,
        key: [u8; 32],
        identity: &TlsIdentity,
        pin: Option<&(String, SocketAddr)>,
    ) -> Result<CachedClient, ClientError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = clients.get(&key) {
            return Ok(found.clone());
        }
        let observations = Arc::new(TlsObservations {
            has_client_cert: identity.client.is_some(),
            ..TlsObservations::default()
        });
        let config = tls::client_config(identity, observations.clone())?;
        // The same identity, verifier and session cache; only the ALPN differs, since
        // the pool speaks HTTP/1.1 alone.
        let mut h1_config = config.clone();
        h1_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let h1_config = Arc::new(h1_config);
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            // Like the pool (which dials directly), never through HTTP(S)_PROXY: every
            // upstream connection goes to the upstream itself, whichever transport.
            .no_proxy()
            .user_agent(concat!("mcpgw/", env!("CARGO_PKG_VERSION")));
        if let Some((name, addr)) = pin {
            builder = builder.resolve(name, *addr);
        }
        let http = builder.build().map_err(|e| ClientError::Build {
            detail: e.to_string(),
        })?;
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let built = (http, observations, h1_config);
        clients.insert(key, built.clone());
        Ok(built)
    }

    /// The connection pool for this identity and the URL's origin, created on first use (the
    /// error is the pool's description of what is wrong with the URL).
    fn pool_for(
        &self,
        key: [u8; 32],
        url: &Url,
        pinned: Option<SocketAddr>,
        h1_config: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<Pool>, String> {
        let mut pool_key = ring::digest::Context::new(&ring::digest::SHA256);
        pool_key.update(&key);
        pool_key.update(url.origin().ascii_serialization().as_bytes());
        let mut pool_key_bytes = [0u8; 32];
        pool_key_bytes.copy_from_slice(pool_key.finish().as_ref());
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(&pool_key_bytes) {
            return Ok(pool.clone());
        }
        let pool = Pool::new(url, pinned, Some(h1_config)).map(Arc::new)?;
        pools.insert(pool_key_bytes, pool.clone());
        Ok(pool)
    }
}

fn url_error(url: &str, detail: &str) -> ClientError {
    ClientError::Url {
        url: url.to_owned(),
        detail: detail.to_owned(),
    }
}

/// An `http://` or `https://` URL with a host.
fn parse_url(url: &str) -> Result<Url, ClientError> {
    let parsed = Url::parse(url).map_err(|e| url_error(url, &e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(url_error(url, "expected an http:// or https:// URL"));
    }
    if parsed.host_str().is_none() {
        return Err(url_error(url, "no host"));
    }
    Ok(parsed)
}

/// Dialling an IP while verifying a name: keep the name in the URL (reqwest verifies and sends
/// SNI for the URL host) and return the name pinned to the IP, for this client only.
fn pin_server_name(
    url: &str,
    parsed: &mut Url,
    identity: &TlsIdentity,
) -> Result<Option<(String, SocketAddr)>, ClientError> {
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let Some(name) = identity.server_name.as_ref().filter(|n| **n != host) else {
        return Ok(None);
    };
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            url_error(
                url,
                "server_name can only be combined with an IP address in the URL",
            )
        })?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    parsed
        .set_host(Some(name))
        .map_err(|e| url_error(url, &e.to_string()))?;
    Ok(Some((name.clone(), SocketAddr::new(ip, port))))
}

/// The cache key of a client: its identity's contents and any pinned address.
fn client_key(identity: &TlsIdentity, pin: Option<&(String, SocketAddr)>) -> [u8; 32] {
    let mut key_ctx = ring::digest::Context::new(&ring::digest::SHA256);
    key_ctx.update(&identity.cache_key());
    if let Some((name, addr)) = pin {
        key_ctx.update(format!("pin:{name}={addr}").as_bytes());
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(key_ctx.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pool_per_identity_and_origin_forgotten_when_unused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cache = ClientCache::new(PathPolicy::default());
        let plain = TlsSettings::default();
        let a = cache.client_for("http://127.0.0.1:1/mcp", &plain).unwrap();
        let b = cache
            .client_for("http://127.0.0.1:1/other", &plain)
            .unwrap();
        assert!(
            Arc::ptr_eq(&a.pool, &b.pool),
            "same origin and identity share a pool"
        );
        let c = cache.client_for("http://127.0.0.1:2/mcp", &plain).unwrap();
        assert!(
            !Arc::ptr_eq(&a.pool, &c.pool),
            "another origin gets its own"
        );
        assert_eq!(cache.pools(), 2);
        drop((a, b));
        cache.sweep();
        assert_eq!(cache.pools(), 1, "the pool nobody holds is forgotten");
        drop(c);
        cache.sweep();
        assert_eq!(cache.pools(), 0);
    }
}
