//! A private iroh relay (`onvm relay`): the `iroh-relay` crate's server, the same version as the
//! node's iroh, so nodes of a private network can meet through the operator's own relay instead
//! of public ones. Peers reach each other through it when no direct path works (NATs,
//! firewalls, blocked UDP); the relay forwards end-to-end encrypted QUIC packets and sees only
//! endpoint ids.
//!
//! It serves the relay protocol over HTTP (for tests and trusted LANs) or HTTPS with a
//! certificate from PEM files. QUIC address discovery (QAD) is not served: nodes find their
//! public addresses without it, only more slowly behind some NATs.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use iroh_relay::server::{
    Access, AccessControl, CertConfig, ClientRateLimit, ClientRequest, Limits, RelayConfig, Server,
    ServerConfig, TlsConfig,
};

/// Default port of the relay's HTTP listener (the port iroh's own dev relay uses).
pub const DEFAULT_HTTP_PORT: u16 = 3340;
/// Default capacity of the server's cache of parsed endpoint keys (iroh-relay's own default is
/// 1 MiB of keys; this bounds memory on a small private relay while still covering thousands of
/// nodes).
pub const DEFAULT_KEY_CACHE: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Config(String),
    #[error("reading {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("starting the relay: {0}")]
    Spawn(String),
}

/// TLS: a certificate chain and its private key (PEM), and the address to serve HTTPS on.
#[derive(Debug, Clone)]
pub struct RelayTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub https_listen: SocketAddr,
    /// The host name the certificate is for; the relay's URL is `https://<hostname>:<port>/`.
    pub hostname: String,
}

/// What `onvm relay` runs.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Plain HTTP listener: the whole relay without TLS, or (with TLS) only the captive-portal
    /// probe iroh needs over plain HTTP.
    pub http_listen: SocketAddr,
    pub tls: Option<RelayTls>,
    /// Per-client limit on bytes per second the relay reads from one node (None: unlimited).
    pub max_bytes_per_sec: Option<NonZeroU32>,
    /// Burst allowed above `max_bytes_per_sec`.
    pub max_burst_bytes: Option<NonZeroU32>,
    pub key_cache: usize,
    /// Nodes must present this token (`net.relay_token`); None admits every node.
    pub token: Option<String>,
    /// Serve the relay's Prometheus metrics (clients, bytes relayed, refusals) over HTTP here.
    pub metrics_listen: Option<SocketAddr>,
}

impl RelayOptions {
    /// A plain-HTTP relay on `http_listen` with no limits and no token (tests).
    pub fn plain(http_listen: SocketAddr) -> Self {
        Self {
            http_listen,
            tls: None,
            max_bytes_per_sec: None,
            max_burst_bytes: None,
            key_cache: DEFAULT_KEY_CACHE,
            token: None,
            metrics_listen: None,
        }
    }
}

/// Admits only nodes presenting the relay's token.
#[derive(Clone)]
struct TokenAccess(Arc<String>);

impl std::fmt::Debug for TokenAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAccess(..)")
    }
}

impl AccessControl for TokenAccess {
    async fn on_connect(&self, request: &ClientRequest) -> Access {
        let presented = request.auth_token().unwrap_or_default();
        // Compare digests so the time taken says nothing about how much of the token matched.
        if blake3::hash(presented.as_bytes()) == blake3::hash(self.0.as_bytes()) {
            Access::Allow
        } else {
            tracing::info!(endpoint = %request.endpoint_id(), "relay: refused a node without the right token");
            Access::Deny {
                reason: Some("this relay needs a token: set net.relay_token".into()),
            }
        }
    }
}

/// A running relay; dropping it stops the server.
pub struct Relay {
    server: Server,
    url: iroh::RelayUrl,
    metrics: Option<iroh_metrics::service::MetricsServer>,
}

impl Relay {
    pub async fn start(options: RelayOptions) -> Result<Relay, RelayError> {
        let mut relay = RelayConfig::new(options.http_listen);
        let mut limits = Limits::default();
        if let Some(rate) = options.max_bytes_per_sec {
            let mut client = ClientRateLimit::new(rate);
            client.max_burst_bytes = options.max_burst_bytes;
            limits.client_rx = Some(client);
        } else if options.max_burst_bytes.is_some() {
            return Err(RelayError::Config(
                "a burst limit needs a rate limit (--max-bytes-per-sec)".into(),
            ));
        }
        relay.limits = limits;
        relay.key_cache_capacity = Some(options.key_cache.max(1));
        if let Some(token) = &options.token {
            if token.is_empty() {
                return Err(RelayError::Config("the relay token is empty".into()));
            }
            relay.access = Arc::new(TokenAccess(Arc::new(token.clone())));
        }
        if let Some(tls) = &options.tls {
            relay.tls = Some(TlsConfig::new(
                tls.https_listen,
                CertConfig::Manual {
                    server_config: tls_server_config(tls)?,
                },
            ));
        }
        let mut config = ServerConfig::default();
        config.relay = Some(relay);
        let server = Server::spawn(config)
            .await
            .map_err(|e| RelayError::Spawn(format!("{e:#}")))?;
        let url = match &options.tls {
            Some(tls) => {
                let port = server
                    .https_addr()
                    .map(|a| a.port())
                    .unwrap_or(tls.https_listen.port());
                format!("https://{}:{port}/", tls.hostname)
            }
            None => {
                let addr = server.http_addr().ok_or_else(|| {
                    RelayError::Spawn("the relay has no HTTP listener".to_string())
                })?;
                // A relay bound to all interfaces is reached at one of them; loopback is the
                // one that surely exists (operators give nodes their public name instead).
                let host = if addr.ip().is_unspecified() {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                } else {
                    addr.ip()
                };
                format!("http://{}/", SocketAddr::new(host, addr.port()))
            }
        };
        let url = url
            .parse()
            .map_err(|e| RelayError::Config(format!("relay URL `{url}`: {e}")))?;
        let metrics = match options.metrics_listen {
            Some(addr) => {
                let mut registry = iroh_metrics::Registry::default();
                registry.register_all(server.metrics());
                let served = iroh_metrics::service::MetricsServer::spawn(addr, Arc::new(registry))
                    .await
                    .map_err(|e| RelayError::Spawn(format!("metrics on {addr}: {e}")))?;
                Some(served)
            }
            None => None,
        };
        Ok(Relay {
            server,
            url,
            metrics,
        })
    }

    /// The URL to give nodes in `net.relays`.
    pub fn url(&self) -> &iroh::RelayUrl {
        &self.url
    }

    /// The plain HTTP listener's address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.http_addr()
    }

    /// The HTTPS listener's address, with TLS.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.server.https_addr()
    }

    /// Where the Prometheus metrics are served (`GET /metrics`), if asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr())
    }

    /// Stops serving and waits for the server's tasks to end.
    pub async fn shutdown(self) {
        if let Some(metrics) = self.metrics {
            metrics.shutdown().await;
        }
        if let Err(e) = self.server.shutdown().await {
            tracing::debug!("relay shutdown: {e:#}");
        }
    }
}

fn tls_server_config(tls: &RelayTls) -> Result<rustls::ServerConfig, RelayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read_err = |what: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |e: rustls::pki_types::pem::Error| RelayError::Read {
            what,
            path,
            reason: e.to_string(),
        }
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(read_err("certificate", &tls.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err("certificate", &tls.cert))?;
    if certs.is_empty() {
        return Err(RelayError::Read {
            what: "certificate",
            path: tls.cert.clone(),
            reason: "no PEM certificate in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(read_err("private key", &tls.key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Config(format!("TLS certificate and key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_files(
        dir: &std::path::Path,
    ) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("self-signed certificate");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key, generated.cert.der().clone())
    }

    fn tls_options(cert: PathBuf, key: PathBuf) -> RelayOptions {
        RelayOptions {
            tls: Some(RelayTls {
                cert,
                key,
                https_listen: "127.0.0.1:0".parse().unwrap(),
                hostname: "localhost".into(),
            }),
            ..RelayOptions::plain("127.0.0.1:0".parse().unwrap())
        }
    }

    #[tokio::test]
    async fn a_tls_relay_serves_https_with_the_given_certificate() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = tls_files(dir.path());
        let relay = Relay::start(tls_options(cert, key)).await.unwrap();
        let https = relay.https_addr().unwrap();
        assert_eq!(
            relay.url().to_string(),
            format!("https://localhost:{}/", https.port())
        );
        // A client that trusts only this certificate completes the handshake and gets the
        // probe iroh's net report makes.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the relay");
        tls.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        relay.shutdown().await;
    }

    #[tokio::test]
    async fn the_relay_serves_its_metrics_when_asked() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let relay = Relay::start(RelayOptions {
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..RelayOptions::plain("127.0.0.1:0".parse().unwrap())
        })
        .await
        .unwrap();
        let mut tcp = tokio::net::TcpStream::connect(relay.metrics_addr().unwrap())
            .await
            .unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("relayserver_"), "{answer}");
        relay.shutdown().await;
    }

    #[tokio::test]
    async fn bad_tls_files_and_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = tls_files(dir.path());
        let missing = dir.path().join("nope.pem");
        let err = Relay::start(tls_options(missing.clone(), key.clone()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("certificate") && err.contains("nope.pem"),
            "{err}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let err = Relay::start(tls_options(cert.clone(), garbage))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("private key"), "{err}");
        // The key of another certificate does not match this one.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key, _) = tls_files(other.path());
        let err = Relay::start(tls_options(cert, other_key))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("TLS"), "{err}");
        let err = Relay::start(RelayOptions {
            max_burst_bytes: NonZeroU32::new(10),
            ..RelayOptions::plain("127.0.0.1:0".parse().unwrap())
        })
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("rate limit"), "{err}");
        let busy = Relay::start(RelayOptions::plain("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let err = Relay::start(RelayOptions::plain(busy.http_addr().unwrap()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("starting the relay"), "{err}");
        busy.shutdown().await;
    }
}
