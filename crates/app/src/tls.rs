//! TLS with rustls: the public listener (`[server.tls]`), the internal one and the clients
//! between processes (`[topology.tls]`).
//!
//! A listener with TLS speaks nothing else: a plaintext client gets no answer. Handshakes run
//! on tasks of their own, so a client that never finishes one holds no other connection up.
//! The processes of a split trust the certificate authority of `topology.tls.ca_file` (and no
//! other) for every call between them: bus requests and events, registrations, and the
//! gateway's proxied requests.

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[server.tls]`: the public listener's certificate chain and key (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[topology.tls]`: the internal listener's certificate chain and key, and the authority
/// every process trusts for the others (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a listener offers in ALPN: the public one HTTP/1.1; the internal one HTTP/2 as well,
/// for the gRPC adapter (a gRPC client refuses a connection that did not agree on `h2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    Http1,
    Http2AndHttp1,
}

/// A server configuration from a certificate chain and key; the error names the file.
pub fn server_config(
    cert_file: &PathBuf,
    key_file: &PathBuf,
    protocols: Protocols,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = match protocols {
        Protocols::Http1 => vec![b"http/1.1".to_vec()],
        Protocols::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// A client configuration that trusts the authorities in `ca_file` only.
pub fn client_config(ca_file: &PathBuf) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?
    {
        let cert = cert.map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{} holds an unusable certificate: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {}", ca_file.display()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The gRPC adapter's TLS: trusting the authorities in `ca_file` only, as [`client_config`].
pub fn grpc_client_config(ca_file: &PathBuf) -> Result<banyan_bus::grpc::ClientTlsConfig, String> {
    // Read and checked as the HTTP clients' authority is, so both refuse the same files.
    client_config(ca_file)?;
    let pem =
        std::fs::read(ca_file).map_err(|e| format!("cannot read {}: {e}", ca_file.display()))?;
    Ok(banyan_bus::grpc::ClientTlsConfig::new()
        .ca_certificate(banyan_bus::grpc::Certificate::from_pem(pem)))
}

/// The HTTP client every call between processes uses: trusting `tls`'s authority when the
/// topology has one.
pub fn client_builder(tls: Option<&InternalTls>) -> Result<reqwest::ClientBuilder, String> {
    let builder = banyan_bus::http::client_builder();
    Ok(match tls {
        Some(tls) => builder.tls_backend_preconfigured(client_config(&tls.ca_file)?),
        None => builder,
    })
}

/// A TCP listener whose connections are TLS streams once their handshake is done.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and handshakes each connection on a task of its own, until this
    /// listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (done, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = done.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors or the like: wait, as axum's own listener does.
                        tracing::warn!(%error, "Cannot accept a connection.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // As on the plaintext listeners (see `server::serve`).
                let _ = stream.set_nodelay(true);
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "A TLS handshake failed.");
                        }
                        Err(_) => tracing::debug!(%peer, "A TLS handshake timed out."),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
