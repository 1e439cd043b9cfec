//! Accept loops: the TCP listener (TLS or plain) and the control socket share one way of serving
//! an axum router on a connection, and one graceful-shutdown watcher. On the listener, `POST /mcp`
//! over HTTP/1.1 is served by [`crate::h1::server`] before hyper sees the connection.
//!
//! Each TLS accept takes the serving config current at that instant, so a swap affects only
//! handshakes that start after it; open connections are never touched by a reload.
//!
//! The listener's connections are capped in all and per peer address (`[http] max_connections`,
//! `max_connections_per_peer`, `crate::access::quota`): one past a cap is closed as soon as it
//! is accepted, before a TLS handshake or a byte read, counted and logged by the quota.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::Connection;
use crate::h1::server as h1;
use crate::tls::serving::ServingCert;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send request headers, unless configured.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent HTTP/2 streams per connection: a flood of streams queues instead of fanning out.
const H2_MAX_STREAMS: u32 = 128;

/// Serve `app` on one connection until it closes or shutdown drains it: on the listener
/// (where `POST /mcp` skips the router) through [`h1`], which serves that route itself and
/// hands anything else to hyper; elsewhere (the control socket) through hyper alone.
pub async fn serve_connection<S>(
    io: S,
    app: crate::http::App,
    watcher: Watcher,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match app.listener().cloned() {
        Some(state) => {
            let limits = h1::Limits {
                header_timeout,
                body_timeout: state.body_timeout,
                linger: state.linger,
                stop,
            };
            h1::serve(io, app, state, watcher, limits).await;
        }
        None => serve_hyper(io, app, watcher, header_timeout).await,
    }
}

/// Serve `app` on one connection with hyper (HTTP/1.1 or HTTP/2).
pub(crate) async fn serve_hyper<S>(
    io: S,
    app: crate::http::App,
    watcher: Watcher,
    header_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .enable_connect_protocol()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .timer(hyper_util::rt::TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), app);
    if let Err(err) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Accept TCP connections until `stop` fires, each within the connection caps.
pub async fn run_listener(
    listener: TcpListener,
    app: crate::http::App,
    tls: Option<Arc<ServingCert>>,
    stop: CancellationToken,
    graceful: Arc<GracefulShutdown>,
    header_timeout: Duration,
) {
    let caps = app
        .listener()
        .map(|state| state.quotas.connections().clone());
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Held by the connection's task for as long as it serves.
        let slot = match caps.as_ref().map(|caps| caps.admit(peer.ip())).transpose() {
            Ok(slot) => slot,
            Err(_) => {
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let app = app.on(Connection {
                    peer: Some(peer),
                    certificate: None,
                });
                let stop = stop.clone();
                tokio::spawn(async move {
                    serve_connection(stream, app, watcher, header_timeout, stop).await;
                    drop(slot);
                });
            }
            Some(serving) => {
                let config = serving.current().config.clone();
                let stop = stop.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let certificate = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(<[_]>::first)
                                .and_then(|leaf| crate::access::certificate::name_of(leaf))
                                .zip(app.listener())
                                .map(|(name, state)| state.auth.certificate(&name));
                            let app = app.on(Connection {
                                peer: Some(peer),
                                certificate,
                            });
                            serve_connection(tls_stream, app, watcher, header_timeout, stop).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}
