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
        let url_err = |detail: &str| ClientError::Url {
            url: url.to_owned(),
            detail: detail.to_owned(),
        };
        let mut parsed = Url::parse(url).map_err(|e| url_err(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(url_err("expected an http:// or https:// URL"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| url_err("no host"))?
            .to_owned();
        let identity = TlsIdentity::load(settings, &self.policy)?;

        // Dialling an IP while verifying a name: keep the name in the URL (reqwest verifies and
        // sends SNI for the URL host) and pin the name to the IP for this client.
        let mut pin: Option<(String, SocketAddr)> = None;
        if let Some(name) = identity.server_name.as_ref().filter(|n| **n != host) {
            let ip: IpAddr = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    url_err("server_name can only be combined with an IP address in the URL")
                })?;
            let port = parsed.port_or_known_default().unwrap_or(443);
            parsed
                .set_host(Some(name))
                .map_err(|e| url_err(&e.to_string()))?;
            pin = Some((name.clone(), SocketAddr::new(ip, port)));
        }

        let mut key_ctx = ring::digest::Context::new(&ring::digest::SHA256);
        key_ctx.update(&identity.cache_key());
        if let Some((name, addr)) = &pin {
            key_ctx.update(format!("pin:{name}={addr}").as_bytes());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(key_ctx.finish().as_ref());

        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let (http, observations, h1_config) = match clients.get(&key) {
            Some(found) => found.clone(),
            None => {
                let observations = Arc::new(TlsObservations {
                    has_client_cert: identity.client.is_some(),
                    ..TlsObservations::default()
                });
                let config = tls::client_config(&identity, observations.clone())?;
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
                if let Some((name, addr)) = &pin {
                    builder = builder.resolve(name, *addr);
                }
                let http = builder.build().map_err(|e| ClientError::Build {
                    detail: e.to_string(),
                })?;
                self.builds
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                clients.insert(key, (http.clone(), observations.clone(), h1_config.clone()));
                (http, observations, h1_config)
            }
        };
        drop(clients);
        let pool = {
            let mut pool_key = ring::digest::Context::new(&ring::digest::SHA256);
            pool_key.update(&key);
            pool_key.update(parsed.origin().ascii_serialization().as_bytes());
            let mut pool_key_bytes = [0u8; 32];
            pool_key_bytes.copy_from_slice(pool_key.finish().as_ref());
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            match pools.get(&pool_key_bytes) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = Pool::new(&parsed, pin.map(|(_, addr)| addr), Some(h1_config))
                        .map(Arc::new)
                        .map_err(|detail| url_err(&detail))?;
                    pools.insert(pool_key_bytes, pool.clone());
                    pool
                }
            }
        };
        Ok(UpstreamClient {
            http,
            observations,
            identity: Arc::new(identity),
            url: parsed,
            pool,
        })
    }
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
