//! The one way to get an HTTP client for an upstream: `ClientCache::client_for`.
//!
//! Registration, health checks, sessions, listings and calls all come through here, so every
//! request to an upstream carries that upstream's full TLS identity. Clients are built once per
//! identity (keyed by the hash of its contents) and reused, with their connection pools.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use url::Url;

use super::identity::{IdentityError, PathPolicy, TlsIdentity};
use super::tls::{self, TlsBuildError, TlsObservations};
use crate::destination::{Refused, UrlPolicy};
use crate::h1::client::{OriginError, Pool, Wait};
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
    /// The upstream URL policy refuses the URL's host.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The URL is not usable.
    #[error("invalid upstream URL '{url}': {detail}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// An HTTP client bound to one TLS identity, and what its handshakes have seen.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// Handshake observations for diagnosis.
    pub observations: Arc<TlsObservations>,
    /// The identity it was built for.
    pub identity: Arc<TlsIdentity>,
    /// The URL to send requests to (host replaced by the server name when dialling an IP).
    pub url: Url,
    /// Pooled HTTP/1.1 connections to the URL's origin with this identity: every request of
    /// either transport goes through it.
    pub pool: Arc<Pool>,
}

/// A built TLS context: the observations its config records into, and the config.
type CachedClient = (Arc<TlsObservations>, Arc<rustls::ClientConfig>);

/// Clients by identity.
#[derive(Debug, Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<[u8; 32], CachedClient>>,
    /// Connection pools by identity and origin.
    pools: Mutex<HashMap<[u8; 32], Arc<Pool>>>,
    policy: PathPolicy,
    /// Where upstream connections may go; every pool judges its addresses by it.
    destinations: Arc<UrlPolicy>,
    builds: std::sync::atomic::AtomicU64,
    /// The upstream wait every pool uses.
    wait: Arc<Wait>,
}

impl ClientCache {
    /// A cache that reads certificate files only under `policy`'s directories.
    pub fn new(policy: PathPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// The same cache, its pools using `wait` (the gateway's, set up with its runtime).
    pub fn with_wait(self, wait: Arc<Wait>) -> Self {
        Self { wait, ..self }
    }

    /// The same cache, its clients going only where `destinations` allows.
    pub fn with_url_policy(self, destinations: UrlPolicy) -> Self {
        Self {
            destinations: Arc::new(destinations),
            ..self
        }
    }

    /// Where certificate files may be read from.
    pub fn path_policy(&self) -> &PathPolicy {
        &self.policy
    }

    /// Where upstream connections may go.
    pub fn url_policy(&self) -> &UrlPolicy {
        &self.destinations
    }

    /// The upstream wait of every pool made here.
    pub fn wait(&self) -> &Arc<Wait> {
        &self.wait
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
        self.destinations
            .check_host(&parsed.host().ok_or_else(|| url_err("no host"))?)?;
        let identity = TlsIdentity::load(settings, &self.policy)?;
        let pin = pin_server_name(&mut parsed, &identity).map_err(|e| url_err(&e))?;

        let mut key_ctx = ring::digest::Context::new(&ring::digest::SHA256);
        key_ctx.update(&identity.cache_key());
        if let Some(addr) = &pin {
            key_ctx.update(format!("pin:{}={addr}", parsed.host_str().unwrap_or("")).as_bytes());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(key_ctx.finish().as_ref());

        let (observations, config) = self.tls_for(key, &identity)?;
        let pool = self
            .pool_for(key, &parsed, pin, config)
            .map_err(|e| url_err(&e.to_string()))?;
        Ok(UpstreamClient {
            observations,
            identity: Arc::new(identity),
            url: parsed,
            pool,
        })
    }

    /// The TLS context of the identity hashed as `key`, built at its first use.
    fn tls_for(&self, key: [u8; 32], identity: &TlsIdentity) -> Result<CachedClient, ClientError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = clients.get(&key) {
            return Ok(found.clone());
        }
        let observations = Arc::new(TlsObservations {
            has_client_cert: identity.client.is_some(),
            ..TlsObservations::default()
        });
        let mut config = tls::client_config(identity, observations.clone())?;
        // The pool speaks HTTP/1.1 alone.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let built = (observations, Arc::new(config));
        self.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        clients.insert(key, built.clone());
        Ok(built)
    }

    /// The pool of the identity hashed as `key` for `url`'s origin, made at its first use.
    fn pool_for(
        &self,
        key: [u8; 32],
        url: &Url,
        pin: Option<SocketAddr>,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<Pool>, OriginError> {
        let mut pool_key = ring::digest::Context::new(&ring::digest::SHA256);
        pool_key.update(&key);
        pool_key.update(url.origin().ascii_serialization().as_bytes());
        let mut pool_key_bytes = [0u8; 32];
        pool_key_bytes.copy_from_slice(pool_key.finish().as_ref());
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(&pool_key_bytes) {
            return Ok(pool.clone());
        }
        let pool = Arc::new(Pool::new(
            url,
            pin,
            Some(config),
            self.wait.clone(),
            self.destinations.clone(),
        )?);
        pools.insert(pool_key_bytes, pool.clone());
        Ok(pool)
    }
}

/// Dialling an IP while verifying a name (`server_name`): put the name in `url` (the pool
/// verifies it, sends it as SNI and `Host`) and return the address to dial instead of
/// resolving it.
fn pin_server_name(url: &mut Url, identity: &TlsIdentity) -> Result<Option<SocketAddr>, String> {
    let host = url.host_str().ok_or("no host")?.to_owned();
    let Some(name) = identity.server_name.as_ref().filter(|n| **n != host) else {
        return Ok(None);
    };
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| "server_name can only be combined with an IP address in the URL")?;
    let port = url.port_or_known_default().unwrap_or(443);
    url.set_host(Some(name)).map_err(|e| e.to_string())?;
    Ok(Some(SocketAddr::new(ip, port)))
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
