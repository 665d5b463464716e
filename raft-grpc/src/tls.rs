//! Mutual TLS: the configuration, and the server's own TLS accept loop (so that a refused
//! handshake — wrong certificate, no certificate, plaintext — is logged with its reason and
//! counted, instead of vanishing inside the HTTP server).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tracing::{debug, warn};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::transport::Shared;

/// TLS handshakes in progress at once on one server; connections beyond wait in the kernel's
/// accept queue.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// Mutual TLS material, all PEM-encoded. Every node has a certificate signed by the cluster CA;
/// a node accepts only peers whose certificate chains to that CA, and a client checks the
/// server's certificate against the name it dials (or `server_name`).
#[derive(Clone)]
pub struct TlsConfig {
    /// The cluster CA certificate(s).
    pub ca_pem: Vec<u8>,
    /// This node's certificate chain.
    pub cert_pem: Vec<u8>,
    /// This node's private key.
    pub key_pem: Vec<u8>,
    /// The name to expect in peers' server certificates instead of the host of their address
    /// (useful when all nodes share one DNS name in their certificates).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsConfig")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (field, pem) in [
            ("tls.ca_pem", &self.ca_pem),
            ("tls.cert_pem", &self.cert_pem),
            ("tls.key_pem", &self.key_pem),
        ] {
            if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(Error::Config {
                    field,
                    rule: "must be PEM (no -----BEGIN found)".into(),
                });
            }
        }
        Ok(())
    }

    /// TLS settings for a tonic `Server` that requires client certificates from the cluster CA.
    pub fn server_tls_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// TLS settings for dialling `host`.
    pub(crate) fn client_tls_config(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(self.server_name.clone().unwrap_or_else(|| host.to_string()))
            .assume_http2(true)
    }
}

impl TlsConfig {
    /// The rustls server configuration: this node's certificate, client certificates required
    /// and verified against the cluster CA, HTTP/2 by ALPN.
    fn rustls_server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let bad = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("cert_pem", &e))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| bad("key_pem", &e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(ca.map_err(|e| bad("ca_pem", &e))?).map_err(|e| bad("ca_pem", &e))?;
        }
        let provider = Arc::new(crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad("client verifier", &e))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("protocol versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Accepts TCP connections on `listener`, performs the TLS handshake (bounded by
/// `connect_timeout`, at most [`MAX_PENDING_HANDSHAKES`] at once) and yields the TLS streams.
/// A failed handshake is counted and logged once per remote IP and reason. Stops when the
/// returned receiver is dropped.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    tls: &TlsConfig,
    shared: Arc<Shared>,
) -> Result<mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>>, Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.rustls_server_config()?);
    let (tx, rx) = mpsc::channel(MAX_PENDING_HANDSHAKES);
    let limit = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let timeout = shared.config.connect_timeout;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let (acceptor, tx, shared) = (acceptor.clone(), tx.clone(), shared.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => refused(&shared, remote, &e.to_string()),
                    Err(_) => {
                        refused(&shared, remote, &format!("no TLS handshake within {timeout:?}"))
                    }
                }
            });
        }
    });
    Ok(rx)
}

fn refused(shared: &Shared, remote: SocketAddr, reason: &str) {
    Metrics::add(&shared.metrics.tls_handshakes_failed, 1);
    let hint = if reason.contains("corrupt message") || reason.contains("InvalidContentType") {
        "the peer is probably not using TLS"
    } else if reason.contains("certificate") || reason.contains("Certificate") {
        "the peer's certificate is not signed by the cluster CA, or it sent none"
    } else {
        ""
    };
    let mut h = DefaultHasher::new();
    reason.hash(&mut h);
    let ip = match remote.ip() {
        std::net::IpAddr::V4(ip) => u64::from(ip.to_bits()),
        std::net::IpAddr::V6(ip) => ip.to_bits() as u64,
    };
    if shared.refusals.first("tls", ip, h.finish()) {
        warn!(node = shared.config.node_id, remote = %remote, reason, hint, "refused a TLS connection");
    } else {
        debug!(node = shared.config.node_id, remote = %remote, reason, "refused a TLS connection again");
    }
}
