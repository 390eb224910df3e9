//! The iroh endpoint and router: the node's identity on the network, its relays, and the
//! protocols it serves. The only module that imports iroh's networking types. One file per
//! concern:
//! - `wire`: every wire type (ALPNs, peer and call messages, the gossip message);
//! - `peers`: the peer table and the peer protocol (hello, ping, bans);
//! - `sync`: DAG pull sync and finding blobs at peers;
//! - `gossip`: DAG push over iroh-gossip;
//! - `call`: calls, jobs and committee requests forwarded between nodes;
//! - `committee`: PBFT messages between the members of a program's committee;
//! - `mdns`, `replicate`: LAN discovery and full blob replication.
//!
//! Every task it spawns goes through [`Tasks`] and ends on shutdown.

use std::net::SocketAddr;

use iroh::Endpoint;
use iroh::RelayMode;
use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::protocol::Router;
use iroh_blobs::BlobsProtocol;
use iroh_tickets::endpoint::EndpointTicket;

use crate::config::{NetConfig, Relays};

mod call;
mod committee;
mod gossip;
mod mdns;
mod peers;
mod replicate;
mod sync;
mod wire;
pub use call::{CallHandler, CallProtocol, ForwardLimits};
pub use committee::CommitteeHandler;
pub use gossip::{TOPIC_TAG, max_payload, topic_id};
pub use peers::{BAN_AFTER, PeerError, PeerProtocol, Peers};
pub use wire::{
    Attachment, CALL_ALPN, COMMITTEE_ALPN, CommitteeEnvelope, ForwardedCall, ForwardedReply,
    GossipMessage, Hello, MAX_PEER_MESSAGE, PEER_ALPN, PeerRequest, PeerResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid iroh listen address {addr}: {reason}")]
    BadListen { addr: SocketAddr, reason: String },
    #[error("binding the iroh endpoint on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Relays(String),
}

/// The relay transport of the endpoint: `net.relays` resolved (an access token, when set, is
/// presented to every configured relay).
fn relay_mode(config: &NetConfig) -> Result<RelayMode, NetError> {
    let relays = config
        .relays()
        .map_err(|e| NetError::Relays(e.to_string()))?;
    Ok(match relays {
        Relays::None => RelayMode::Disabled,
        Relays::Public => RelayMode::Default,
        Relays::Custom(urls) => {
            let map = iroh::RelayMap::empty();
            for url in urls {
                // No QUIC address discovery: `onvm relay` serves the relay protocol over
                // HTTP(S) only, and probing a QUIC port nobody serves only delays the report.
                let mut relay = iroh::RelayConfig::new(url.clone(), None);
                if !config.relay_token.is_empty() {
                    relay = relay.with_auth_token(config.relay_token.clone());
                }
                map.insert(url, std::sync::Arc::new(relay));
            }
            RelayMode::Custom(map)
        }
    })
}

/// The certificates of `net.relay_ca_file`, trusted for relays beside the public roots.
fn relay_roots(
    config: &NetConfig,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, NetError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = &config.relay_ca_file;
    let bad = |e: rustls::pki_types::pem::Error| {
        NetError::Relays(format!("net.relay_ca_file: reading {path}: {e}"))
    };
    let roots = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if roots.is_empty() {
        return Err(NetError::Relays(format!(
            "net.relay_ca_file: {path} holds no PEM certificate"
        )));
    }
    Ok(roots)
}

/// Binds the iroh endpoint on `addr` with the node's transport settings.
async fn bind_endpoint(
    secret_key: iroh::SecretKey,
    config: &NetConfig,
    addr: SocketAddr,
) -> Result<Endpoint, NetError> {
    let bad = |e: iroh::endpoint::InvalidSocketAddr| NetError::BadListen {
        addr,
        reason: e.to_string(),
    };
    let relays = relay_mode(config)?;
    let has_relays = !matches!(relays, RelayMode::Disabled);
    let mut builder = if config.offline {
        // No public service: no address lookup, no port mapping, no probes of public servers.
        // Peers dial us with the addresses inside our ticket (direct ones, and our home relay
        // when net.relays names one).
        let report = if has_relays {
            // The home relay is chosen from HTTPS latency probes of the configured relays
            // (there is no QUIC address discovery on them); captive-portal checks stay off.
            let mut report = NetReportConfig::minimal();
            report.https_probes = true;
            report
        } else {
            NetReportConfig::minimal()
        };
        Endpoint::builder(presets::Minimal)
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(report)
    } else {
        Endpoint::builder(presets::N0)
    };
    builder = builder.relay_mode(relays);
    if !config.relay_ca_file.is_empty() {
        builder = builder.ca_tls_config(
            iroh_relay::tls::CaTlsConfig::default().with_extra_roots(relay_roots(config)?),
        );
    }
    builder = if config.relay_only {
        // No UDP socket at all: the relay is the only way in or out.
        builder.clear_ip_transports()
    } else if config.offline {
        // Only the configured address (the default also binds IPv6 on all interfaces).
        builder.clear_ip_transports().bind_addr(addr).map_err(bad)?
    } else {
        builder.bind_addr(addr).map_err(bad)?
    };
    let idle = std::time::Duration::from_millis(config.idle_timeout_ms);
    let keep_alive = idle / 3;
    let transport = iroh::endpoint::QuicTransportConfig::builder()
        .max_idle_timeout(idle.try_into().ok())
        .keep_alive_interval(keep_alive)
        .default_path_max_idle_timeout(idle)
        .default_path_keep_alive_interval(keep_alive)
        .build();
    builder
        .secret_key(secret_key)
        .transport_config(transport)
        .bind()
        .await
        .map_err(|e| NetError::Bind {
            addr,
            reason: e.to_string(),
        })
}

// Gossip, sync rounds, dials and requests being answered all run in one `Tasks`.
use crate::util::Tasks;

/// How long a starting node waits for its home relay before it goes on without one.
const HOME_RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The running network side of a node.
pub struct Net {
    router: Router,
    offline: bool,
    relays: Relays,
    peers: std::sync::Arc<Peers>,
    /// Every task this layer spawned, stopped at shutdown.
    tasks: Tasks,
}

impl Net {
    /// Binds the endpoint with the node's key and starts serving blobs.
    pub async fn start(
        secret_key: iroh::SecretKey,
        config: &NetConfig,
        network_id: &str,
        blobs: &crate::blobs::Blobs,
        store: &crate::store::Store,
        job_events: tokio::sync::broadcast::Sender<onvm_rpc_api::jobs::JobEvent>,
        replicate_all_blobs: bool,
    ) -> Result<Self, NetError> {
        let blob_store = blobs.store();
        let endpoint = match bind_endpoint(secret_key.clone(), config, config.listen).await {
            Err(e) if config.listen.port() == crate::config::DEFAULT_NET_PORT => {
                // Another node on this machine holds the default port: any free port works,
                // since peers dial the addresses inside this node's ticket.
                let any = SocketAddr::new(config.listen.ip(), 0);
                let endpoint = bind_endpoint(secret_key, config, any).await?;
                tracing::warn!(
                    "iroh port {} is busy ({e}); listening on {:?} instead (set net.listen or --listen to choose)",
                    config.listen,
                    endpoint.bound_sockets()
                );
                endpoint
            }
            other => other?,
        };
        // Addresses learned from tickets and hellos, for what dials by id only (gossip).
        let memory = iroh::address_lookup::memory::MemoryLookup::new();
        if let Ok(lookup) = endpoint.address_lookup() {
            lookup.add(memory.clone());
        }
        let max_gossip_bytes = usize::try_from(config.max_gossip_bytes).unwrap_or(usize::MAX);
        let gossip = iroh_gossip::net::Gossip::builder()
            .max_message_size(max_gossip_bytes)
            .spawn(endpoint.clone());
        let blobs_protocol = BlobsProtocol::new(blob_store, None);
        let tasks = Tasks::default();
        let peers = std::sync::Arc::new(Peers {
            tasks: tasks.clone(),
            endpoint: endpoint.clone(),
            network_id: network_id.to_string(),
            blobs: blobs.clone(),
            store: store.clone(),
            job_events,
            call_handler: std::sync::OnceLock::new(),
            committee_handler: std::sync::OnceLock::new(),
            committee_conns: std::sync::Mutex::default(),
            forward_limits: ForwardLimits {
                max_bytes: usize::try_from(config.max_forward_bytes).unwrap_or(usize::MAX),
                timeout: std::time::Duration::from_millis(config.forward_timeout_ms),
                dial: std::time::Duration::from_millis(config.forward_dial_timeout_ms),
            },
            memory,
            max_gossip_bytes,
            gossip: Default::default(),
            syncing: Default::default(),
            log_cursors: Default::default(),
            rejected: Default::default(),
            known: Default::default(),
            suspects: std::sync::Mutex::new(crate::consensus::routing::Suspicion::new(
                config.suspect_ms,
            )),
            started: std::time::Instant::now(),
            last_refuted_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let router = Router::builder(endpoint)
            .accept(iroh_blobs::ALPN, blobs_protocol)
            .accept(PEER_ALPN, PeerProtocol(peers.clone()))
            .accept(CALL_ALPN, CallProtocol(peers.clone()))
            .accept(COMMITTEE_ALPN, committee::CommitteeProtocol(peers.clone()))
            .accept(iroh_gossip::ALPN, gossip.clone())
            .spawn();
        tasks.spawn(gossip::receive(peers.clone(), gossip));
        tasks.spawn(gossip::publish(peers.clone()));
        if config.mdns
            && let Err(e) = mdns::start(&peers.endpoint, peers.clone())
        {
            // A LAN without multicast must not keep the node from starting.
            tracing::warn!("mDNS is off: {e}");
        }
        if replicate_all_blobs {
            tasks.spawn(replicate::replicate_all_blobs(peers.clone()));
        }
        let relays = config
            .relays()
            .map_err(|e| NetError::Relays(e.to_string()))?;
        if let Relays::Custom(urls) = &relays {
            // Our ticket names our home relay only once we have one; wait briefly so the
            // ticket printed at start is one a relay-only peer can dial. (The public relays
            // are not waited for: without internet they never answer.)
            if tokio::time::timeout(HOME_RELAY_WAIT, router.endpoint().online())
                .await
                .is_err()
            {
                tracing::warn!(
                    "no connection to any of the relays {urls:?} after {} s; the node goes on and keeps trying (node_info shows relay_connected)",
                    HOME_RELAY_WAIT.as_secs()
                );
            }
        }
        Ok(Self {
            router,
            offline: config.offline,
            relays,
            peers,
            tasks,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        self.router.endpoint()
    }

    pub fn peers(&self) -> &std::sync::Arc<Peers> {
        &self.peers
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

    /// The home relay: the one this node's ticket names.
    pub fn relay_url(&self) -> Option<String> {
        use iroh::Watcher;
        let mut home = self.endpoint().home_relay_status();
        match home.get().first() {
            Some(status) => Some(status.url().to_string()),
            None => self
                .endpoint()
                .addr()
                .relay_urls()
                .next()
                .map(|u| u.to_string()),
        }
    }

    /// Whether the connection to the home relay is up.
    pub fn relay_connected(&self) -> bool {
        use iroh::Watcher;
        let mut home = self.endpoint().home_relay_status();
        home.get().iter().any(|s| s.is_connected())
    }

    /// The configured relays.
    pub fn relays(&self) -> Vec<String> {
        match &self.relays {
            Relays::None => Vec::new(),
            Relays::Public => iroh::RelayMode::Default
                .relay_map()
                .urls::<Vec<_>>()
                .into_iter()
                .map(|u| u.to_string())
                .collect(),
            Relays::Custom(urls) => urls.iter().map(|u| u.to_string()).collect(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.router.is_shutdown() || self.endpoint().is_closed()
    }

    /// Stops accepting connections, ends the protocol handlers and closes the endpoint.
    pub async fn shutdown(&self) {
        // Background work first (gossip, sync rounds, requests being answered), so none of it
        // dials out while the router closes; each task ends at its next await point.
        self.tasks.shutdown().await;
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
    }

    /// Tasks of the network layer still running (none once `shutdown` returned).
    pub fn running_tasks(&self) -> usize {
        self.tasks.running()
    }
}
