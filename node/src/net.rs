//! The iroh endpoint and router: the node's identity on the network and the protocols it serves
//! (iroh-blobs today; gossip and the ONVM ALPNs join here). The only module that imports iroh's
//! networking types.

use std::net::SocketAddr;

use iroh::Endpoint;
use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::protocol::Router;
use iroh_blobs::BlobsProtocol;
use iroh_tickets::endpoint::EndpointTicket;

use crate::config::NetConfig;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid iroh listen address {addr}: {reason}")]
    BadListen { addr: SocketAddr, reason: String },
    #[error("binding the iroh endpoint on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// The running network side of a node.
pub struct Net {
    router: Router,
    offline: bool,
}

impl Net {
    /// Binds the endpoint with the node's key and starts serving blobs.
    pub async fn start(
        secret_key: iroh::SecretKey,
        config: &NetConfig,
        blob_store: &iroh_blobs::api::Store,
    ) -> Result<Self, NetError> {
        let addr = config.listen;
        let bad = |e: iroh::endpoint::InvalidSocketAddr| NetError::BadListen {
            addr,
            reason: e.to_string(),
        };
        let builder = if config.offline {
            // Loopback/LAN only: no relays, no address lookup, no port mapping, no probes of
            // public servers. Peers dial us with the direct addresses inside our ticket.
            Endpoint::builder(presets::Minimal)
                .clear_ip_transports()
                .bind_addr(addr)
                .map_err(bad)?
                .portmapper_config(PortmapperConfig::Disabled)
                .net_report_config(NetReportConfig::minimal())
        } else {
            Endpoint::builder(presets::N0)
                .bind_addr(addr)
                .map_err(bad)?
        };
        let endpoint = builder
            .secret_key(secret_key)
            .bind()
            .await
            .map_err(|e| NetError::Bind {
                addr,
                reason: e.to_string(),
            })?;
        let blobs = BlobsProtocol::new(blob_store, None);
        let router = Router::builder(endpoint)
            .accept(iroh_blobs::ALPN, blobs)
            .spawn();
        Ok(Self {
            router,
            offline: config.offline,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        self.router.endpoint()
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    /// A ticket with the endpoint's current addresses. Re-issue it when they change.
    pub fn ticket(&self) -> String {
        EndpointTicket::new(self.endpoint().addr()).to_string()
    }

    /// Direct addresses peers can use, plus the bound sockets when none were discovered yet.
    pub fn addresses(&self) -> Vec<String> {
        let addr = self.endpoint().addr();
        let mut out: Vec<String> = addr.ip_addrs().map(|a| a.to_string()).collect();
        if out.is_empty() {
            out = self
                .endpoint()
                .bound_sockets()
                .iter()
                .map(|a| a.to_string())
                .collect();
        }
        out
    }

    pub fn relay_url(&self) -> Option<String> {
        self.endpoint()
            .addr()
            .relay_urls()
            .next()
            .map(|u| u.to_string())
    }

    pub fn is_closed(&self) -> bool {
        self.router.is_shutdown() || self.endpoint().is_closed()
    }

    /// Stops accepting connections, ends the protocol handlers and closes the endpoint.
    pub async fn shutdown(&self) {
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
    }
}
