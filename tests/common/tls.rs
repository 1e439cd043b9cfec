//! A minimal HTTPS client for tests: real rustls handshakes verified against a CA file, hyper
//! HTTP/1.1 on top, and the presented certificate's fingerprint for each connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client config trusting the CA in `ca_file`.
pub fn client_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in mcpgw::tls::pem::certs_from_file(ca_file).unwrap() {
        roots.add(cert).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An open HTTP/1.1 connection over TLS.
pub struct Conn {
    pub sender: SendRequest<Empty<Bytes>>,
    pub fingerprint: String,
}

/// Handshake with `addr` as `localhost` and return the connection and the served fingerprint.
pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> anyhow::Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let fingerprint = mcpgw::tls::x509::fingerprint(&leaf);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn {
        sender,
        fingerprint,
    })
}

impl Conn {
    /// `GET path`; returns status and body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        self.sender.ready().await?;
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Empty::new())?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
