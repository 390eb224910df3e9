//! The iroh endpoint and router: the node's identity on the network and the protocols it serves
//! (iroh-blobs today; gossip and the ONVM ALPNs join here). The only module that imports iroh's
//! networking types.

use std::net::SocketAddr;

use iroh::Endpoint;
use iroh::RelayMode;
use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::protocol::Router;
use iroh_blobs::BlobsProtocol;
use iroh_tickets::endpoint::EndpointTicket;

use crate::config::{NetConfig, Relays};

mod gossip;
mod mdns;
mod replicate;
pub use gossip::{GossipMessage, TOPIC_TAG, max_payload, topic_id};

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

/// How long a starting node waits for its home relay before it goes on without one.
const HOME_RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The running network side of a node.
pub struct Net {
    router: Router,
    offline: bool,
    relays: Relays,
    peers: std::sync::Arc<Peers>,
    /// Gossip publisher and receiver, stopped at shutdown.
    tasks: Vec<tokio::task::AbortHandle>,
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
        let peers = std::sync::Arc::new(Peers {
            endpoint: endpoint.clone(),
            network_id: network_id.to_string(),
            blobs: blobs.clone(),
            store: store.clone(),
            job_events,
            call_handler: std::sync::OnceLock::new(),
            forward_limits: ForwardLimits {
                max_bytes: usize::try_from(config.max_forward_bytes).unwrap_or(usize::MAX),
                timeout: std::time::Duration::from_millis(config.forward_timeout_ms),
                dial: std::time::Duration::from_millis(config.forward_dial_timeout_ms),
            },
            memory,
            max_gossip_bytes,
            gossip: Default::default(),
            syncing: Default::default(),
            rejected: Default::default(),
            known: Default::default(),
            suspects: Default::default(),
            suspect_for: std::time::Duration::from_millis(config.suspect_ms),
        });
        let router = Router::builder(endpoint)
            .accept(iroh_blobs::ALPN, blobs_protocol)
            .accept(PEER_ALPN, PeerProtocol(peers.clone()))
            .accept(CALL_ALPN, CallProtocol(peers.clone()))
            .accept(iroh_gossip::ALPN, gossip.clone())
            .spawn();
        let mut tasks = vec![
            tokio::spawn(gossip::receive(peers.clone(), gossip)).abort_handle(),
            tokio::spawn(gossip::publish(peers.clone())).abort_handle(),
        ];
        if config.mdns {
            match mdns::start(&peers.endpoint, peers.clone()) {
                Ok(task) => tasks.push(task.abort_handle()),
                // A LAN without multicast must not keep the node from starting.
                Err(e) => tracing::warn!("mDNS is off: {e}"),
            }
        }
        if replicate_all_blobs {
            tasks.push(tokio::spawn(replicate::replicate_all_blobs(peers.clone())).abort_handle());
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
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
    }
}

// ---- the ONVM peer protocol ----

/// Versioned ALPN of the ONVM peer protocol (hello, ping, blob lookup).
pub const PEER_ALPN: &[u8] = b"/onvm/peer/1";
/// Largest peer message accepted; longer streams are reset with [`TOO_LONG`].
pub const MAX_PEER_MESSAGE: usize = 64 * 1024;
/// Stream reset code for a message over [`MAX_PEER_MESSAGE`].
const TOO_LONG: u32 = 1;
/// Stream reset code for a message that does not decode.
const MALFORMED: u32 = 2;
/// Invalid messages (forged, malformed or refused DAG nodes) after which a peer is ignored.
pub const BAN_AFTER: u32 = 16;
/// At most this many peers are learned from others' hellos.
const MAX_PEERS: usize = 64;
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Dial timeout of a sync round (rounds repeat, so a slow peer is simply tried again).
const SYNC_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most DAG nodes pulled from one peer in one sync round (the rest come next round).
const MAX_SYNC_NODES: usize = 10_000;

/// Requests on [`PEER_ALPN`], postcard-encoded, one per bi-directional stream. The variant
/// order is the wire encoding: append new variants, never reorder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PeerRequest {
    Hello(Hello),
    Ping {
        nonce: u64,
    },
    /// Does the peer hold this blob? (BLAKE3 hash)
    HasBlob {
        hash: [u8; 32],
    },
    /// The peer's current DAG heads.
    DagHeads,
    /// One DAG node by id.
    DagGet {
        id: [u8; 32],
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PeerResponse {
    Hello(Hello),
    Pong {
        nonce: u64,
    },
    HasBlob {
        size: Option<u64>,
        mime: Option<String>,
    },
    Refused {
        reason: String,
    },
    DagHeads {
        heads: Vec<[u8; 32]>,
    },
    /// The postcard-encoded node, or None if the peer does not have it.
    DagNode {
        node: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub network_id: String,
    pub version: String,
    /// The sender's own ticket, so the receiver can dial back.
    pub ticket: String,
    /// Tickets of other peers the sender knows (a bounded sample).
    pub peers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid ticket: {0}")]
    BadTicket(String),
    #[error("that ticket is this node's own")]
    SelfDial,
    #[error("cannot reach {peer}: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error("peer {peer} is on network `{theirs}`, this node on `{ours}`")]
    WrongNetwork {
        peer: String,
        theirs: String,
        ours: String,
    },
    #[error("peer {peer} answered unexpectedly: {reason}")]
    Protocol { peer: String, reason: String },
    /// The request never left this node (no connection): safe to send elsewhere.
    #[error("cannot connect to {peer}: {reason}")]
    NotDelivered { peer: String, reason: String },
}

/// What the node knows about one peer.
#[derive(Debug, Clone)]
struct PeerEntry {
    addr: iroh::EndpointAddr,
    network_id: String,
    version: String,
    last_seen_ms: u64,
    latency_ms: Option<f64>,
    last_error: Option<String>,
}

/// The peer registry and the protocol, shared by the accept side and the dial side.
pub struct Peers {
    endpoint: Endpoint,
    network_id: String,
    blobs: crate::blobs::Blobs,
    store: crate::store::Store,
    /// Wakes job subscribers when a replicated job changes.
    job_events: tokio::sync::broadcast::Sender<onvm_rpc_api::jobs::JobEvent>,
    call_handler: std::sync::OnceLock<std::sync::Arc<dyn CallHandler>>,
    forward_limits: ForwardLimits,
    memory: iroh::address_lookup::memory::MemoryLookup,
    max_gossip_bytes: usize,
    /// The current gossip subscription's sender (replaced when the receiver rejoins).
    gossip: std::sync::Mutex<Option<iroh_gossip::api::GossipSender>>,
    /// Peers a pull is running from (at most one at a time each).
    syncing: std::sync::Mutex<std::collections::HashSet<iroh::EndpointId>>,
    /// Invalid messages each peer sent; at [`BAN_AFTER`] the peer is ignored.
    rejected: std::sync::Mutex<std::collections::HashMap<iroh::EndpointId, u32>>,
    known: std::sync::Mutex<std::collections::HashMap<iroh::EndpointId, PeerEntry>>,
    /// Peers a forwarded call recently failed to reach, and when (config `net.suspect_ms`).
    suspects: std::sync::Mutex<std::collections::HashMap<onvm_rpc_api::Hash32, std::time::Instant>>,
    suspect_for: std::time::Duration,
}

async fn request(
    conn: &iroh::endpoint::Connection,
    req: &PeerRequest,
) -> Result<PeerResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let bytes = postcard::to_allocvec(req).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply = recv
        .read_to_end(MAX_PEER_MESSAGE)
        .await
        .map_err(|e| e.to_string())?;
    postcard::from_bytes(&reply).map_err(|e| format!("malformed reply: {e}"))
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("network_id", &self.network_id)
            .finish_non_exhaustive()
    }
}

impl Peers {
    fn hello(&self) -> Hello {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        Hello {
            network_id: self.network_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ticket: EndpointTicket::new(self.endpoint.addr()).to_string(),
            peers: known
                .values()
                .take(16)
                .map(|p| EndpointTicket::new(p.addr.clone()).to_string())
                .collect(),
        }
    }

    /// Records a peer from its hello; false if it is on another network.
    fn remember(&self, id: iroh::EndpointId, hello: &Hello, latency_ms: Option<f64>) -> bool {
        if hello.network_id != self.network_id {
            return false;
        }
        let addr = match hello.ticket.parse::<EndpointTicket>() {
            Ok(t) if t.endpoint_addr().id == id => t.endpoint_addr().clone(),
            // A hello whose ticket names someone else is ignored for addressing.
            _ => iroh::EndpointAddr::new(id),
        };
        if self.is_banned(&id) {
            return false;
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if !known.contains_key(&id) && known.len() >= MAX_PEERS {
            return true;
        }
        if !addr.addrs.is_empty() {
            self.memory.add_endpoint_info(addr.clone());
        }
        if !known.contains_key(&id)
            && let Some(sender) = self.gossip_sender()
        {
            tokio::spawn(async move {
                if let Err(e) = sender.join_peers(vec![id]).await {
                    tracing::debug!("joining {id} on the DAG topic: {e}");
                }
            });
        }
        let entry = known.entry(id).or_insert_with(|| PeerEntry {
            addr: addr.clone(),
            network_id: hello.network_id.clone(),
            version: hello.version.clone(),
            last_seen_ms: 0,
            latency_ms: None,
            last_error: None,
        });
        if !addr.addrs.is_empty() {
            entry.addr = addr;
        }
        entry.version = hello.version.clone();
        entry.last_seen_ms = crate::util::now_ms();
        entry.latency_ms = latency_ms.or(entry.latency_ms);
        entry.last_error = None;
        true
    }

    /// Dials `ticket`, exchanges hellos, and then dials (in the background) the peers it knows,
    /// so a node that joins through one peer meets the network.
    /// After a restart a node knows its network only from the DAG: dials every node announced
    /// there (by the ticket it announced) that it is not already connected to, all at once.
    pub async fn rejoin_announced(self: &std::sync::Arc<Self>) {
        let store = self.store.clone();
        let Ok(Ok(tickets)) = tokio::task::spawn_blocking(move || store.announced_tickets()).await
        else {
            return;
        };
        let me = onvm_rpc_api::Hash32(*self.endpoint.id().as_bytes());
        let mut dials = tokio::task::JoinSet::new();
        for (id, ticket) in tickets {
            let known = iroh::EndpointId::from_bytes(&id.0)
                .map(|e| self.known_addr(&e).is_some())
                .unwrap_or(true);
            if id == me || known {
                continue;
            }
            let peers = self.clone();
            dials.spawn(async move {
                if let Err(e) = peers.connect(&ticket).await {
                    tracing::debug!(peer = %id, "rejoining an announced node: {e}");
                }
            });
        }
        dials.join_all().await;
    }

    pub async fn connect(
        self: &std::sync::Arc<Self>,
        ticket: &str,
    ) -> Result<onvm_rpc_api::types::PeerInfo, PeerError> {
        let (info, learned) = self.dial(ticket).await?;
        for other in learned {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.dial(&other).await {
                    tracing::debug!("dialing a peer learned by hello: {e}");
                }
            });
        }
        Ok(info)
    }

    /// One hello exchange; returns the peer and the tickets it knows that this node does not.
    async fn dial(
        &self,
        ticket: &str,
    ) -> Result<(onvm_rpc_api::types::PeerInfo, Vec<String>), PeerError> {
        let ticket: EndpointTicket = ticket
            .trim()
            .parse()
            .map_err(|e: iroh_tickets::ParseError| PeerError::BadTicket(e.to_string()))?;
        let addr = ticket.endpoint_addr().clone();
        let id = addr.id;
        if id == self.endpoint.id() {
            return Err(PeerError::SelfDial);
        }
        let unreachable = |reason: String| PeerError::Unreachable {
            peer: id.to_string(),
            reason,
        };
        let conn = tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, PEER_ALPN))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let started = std::time::Instant::now();
        let reply = request(&conn, &PeerRequest::Hello(self.hello()))
            .await
            .map_err(unreachable)?;
        let latency = started.elapsed().as_secs_f64() * 1e3;
        let hello = match reply {
            PeerResponse::Hello(h) => h,
            PeerResponse::Refused { reason } => {
                return Err(PeerError::Protocol {
                    peer: id.to_string(),
                    reason,
                });
            }
            other => {
                return Err(PeerError::Protocol {
                    peer: id.to_string(),
                    reason: format!("{other:?}"),
                });
            }
        };
        if !self.remember(id, &hello, Some(latency)) {
            return Err(PeerError::WrongNetwork {
                peer: id.to_string(),
                theirs: hello.network_id,
                ours: self.network_id.clone(),
            });
        }
        let learned = hello
            .peers
            .into_iter()
            .filter(|other| match other.parse::<EndpointTicket>() {
                Ok(t) => {
                    let other_id = t.endpoint_addr().id;
                    other_id != self.endpoint.id() && !self.is_known(&other_id)
                }
                Err(_) => false,
            })
            .collect();
        let info = self.info(&id).await.unwrap_or_else(|| unreachable_info(id));
        Ok((info, learned))
    }

    async fn info(&self, id: &iroh::EndpointId) -> Option<onvm_rpc_api::types::PeerInfo> {
        let entry = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()?;
        let connection = match self.endpoint.remote_info(*id).await {
            Some(info) => {
                use iroh::endpoint::TransportAddrUsage;
                let active: Vec<_> = info
                    .addrs()
                    .filter(|a| matches!(a.usage(), TransportAddrUsage::Active))
                    .collect();
                if active
                    .iter()
                    .any(|a| matches!(a.addr(), iroh::TransportAddr::Ip(_)))
                {
                    "direct"
                } else if active
                    .iter()
                    .any(|a| matches!(a.addr(), iroh::TransportAddr::Relay(_)))
                {
                    "relayed"
                } else {
                    "unknown"
                }
            }
            None => "unknown",
        };
        Some(onvm_rpc_api::types::PeerInfo {
            endpoint_id: id.to_string(),
            ticket: EndpointTicket::new(entry.addr.clone()).to_string(),
            network_id: entry.network_id,
            version: entry.version,
            connection: connection.to_string(),
            latency_ms: entry.latency_ms,
            last_seen_ms: entry.last_seen_ms,
            last_error: entry.last_error,
            rejected: self.rejected_count(id),
        })
    }

    pub async fn list(&self) -> Vec<onvm_rpc_api::types::PeerInfo> {
        let ids: Vec<_> = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(i) = self.info(&id).await {
                out.push(i);
            }
        }
        out.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        out
    }

    fn addrs(&self) -> Vec<iroh::EndpointAddr> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|p| p.addr.clone())
            .collect()
    }

    /// Known peer ids (gossip bootstrap).
    fn ids(&self) -> Vec<iroh::EndpointId> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn is_known(&self, id: &iroh::EndpointId) -> bool {
        self.known_addr(id).is_some()
    }

    /// The address this node knows for a peer, if it is in the peer table.
    fn known_addr(&self, id: &iroh::EndpointId) -> Option<iroh::EndpointAddr> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|p| p.addr.clone())
    }

    /// The peer's known address, or just its id (resolved by address lookup).
    fn addr_of(&self, id: &iroh::EndpointId) -> iroh::EndpointAddr {
        self.known_addr(id)
            .unwrap_or_else(|| iroh::EndpointAddr::new(*id))
    }

    /// Counts an invalid message against `id` (shown in `peer_list`); at [`BAN_AFTER`] the
    /// peer's gossip, hellos and sync are ignored until this node restarts.
    fn penalise(&self, id: &iroh::EndpointId, reason: String) {
        tracing::debug!(peer = %id, "penalised: {reason}");
        let count = {
            let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
            let n = rejected.entry(*id).or_insert(0);
            *n += 1;
            *n
        };
        if count == BAN_AFTER {
            tracing::warn!(peer = %id, "banned after {BAN_AFTER} invalid messages: {reason}");
        }
        self.mark(id, Err(reason));
    }

    fn is_banned(&self, id: &iroh::EndpointId) -> bool {
        self.rejected_count(id) >= BAN_AFTER
    }

    fn rejected_count(&self, id: &iroh::EndpointId) -> u32 {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    fn mark(&self, id: &iroh::EndpointId, result: Result<f64, String>) {
        if let Some(e) = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            match result {
                Ok(latency) => {
                    e.latency_ms = Some(latency);
                    e.last_seen_ms = crate::util::now_ms();
                    e.last_error = None;
                }
                Err(err) => e.last_error = Some(err),
            }
        }
    }

    /// Pings every peer once (latency and liveness for `peer_list`).
    pub async fn ping_all(&self) {
        for addr in self.addrs() {
            let id = addr.id;
            let result = async {
                let conn =
                    tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, PEER_ALPN))
                        .await
                        .map_err(|_| "timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                let nonce: u64 = rand::random();
                let started = std::time::Instant::now();
                match request(&conn, &PeerRequest::Ping { nonce }).await? {
                    PeerResponse::Pong { nonce: n } if n == nonce => {
                        Ok(started.elapsed().as_secs_f64() * 1e3)
                    }
                    other => Err(format!("bad pong: {other:?}")),
                }
            }
            .await;
            self.mark(&id, result);
        }
    }

    /// Pulls every DAG node a peer has and this node lacks: asks for its heads, then walks
    /// back through unknown parents, validating each node before anything is stored, and
    /// stores them parents first. An invalid node ends the round and is recorded against the
    /// peer. Returns how many nodes were added.
    pub async fn sync_dag(&self, addr: iroh::EndpointAddr) -> Result<usize, String> {
        let id = addr.id;
        let conn = tokio::time::timeout(
            SYNC_DIAL_TIMEOUT,
            self.endpoint.connect(addr.clone(), PEER_ALPN),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let heads = match request(&conn, &PeerRequest::DagHeads).await? {
            PeerResponse::DagHeads { heads } => heads,
            other => return Err(format!("unexpected reply {other:?}")),
        };
        let store = self.store.clone();
        let has = |h: onvm_rpc_api::Hash32| {
            let store = store.clone();
            async move {
                tokio::task::spawn_blocking(move || store.has_dag_node(&h))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false)
            }
        };
        let mut wanted: Vec<onvm_rpc_api::Hash32> = Vec::new();
        for h in heads {
            let h = onvm_rpc_api::Hash32(h);
            if !has(h).await {
                wanted.push(h);
            }
        }
        let mut fetched: std::collections::HashMap<
            onvm_rpc_api::Hash32,
            onvm_rpc_api::dag::DagNode,
        > = std::collections::HashMap::new();
        while let Some(want) = wanted.pop() {
            if fetched.contains_key(&want) {
                continue;
            }
            if fetched.len() >= MAX_SYNC_NODES {
                break;
            }
            let bytes = match request(&conn, &PeerRequest::DagGet { id: want.0 }).await? {
                PeerResponse::DagNode { node: Some(bytes) } => bytes,
                PeerResponse::DagNode { node: None } => {
                    return Err(format!("peer does not have {want} it announced"));
                }
                other => return Err(format!("unexpected reply {other:?}")),
            };
            let node: onvm_rpc_api::dag::DagNode =
                postcard::from_bytes(&bytes).map_err(|e| format!("malformed DAG node: {e}"))?;
            let got = node.validate_alone(&self.network_id).map_err(|e| {
                let msg = format!("invalid DAG node {want}: {e}");
                self.penalise(&id, msg.clone());
                msg
            })?;
            if got != want {
                let msg = format!("asked for {want}, got {got}");
                self.penalise(&id, msg.clone());
                return Err(msg);
            }
            for p in &node.body.parents {
                if !fetched.contains_key(p) && !has(*p).await {
                    wanted.push(*p);
                }
            }
            fetched.insert(want, node);
        }
        self.ingest(&addr, fetched).await
    }

    /// Stores validated nodes from peer `from`, parents first (their deterministic order), with
    /// the writes of committed calls fetched from that peer when they travel as blobs. Stops at
    /// the first node that cannot be stored; what came before it stays.
    async fn ingest(
        &self,
        from: &iroh::EndpointAddr,
        mut nodes: std::collections::HashMap<onvm_rpc_api::Hash32, onvm_rpc_api::dag::DagNode>,
    ) -> Result<usize, String> {
        let graph: std::collections::BTreeMap<_, _> = nodes
            .iter()
            .map(|(k, n)| (*k, n.body.parents.clone()))
            .collect();
        let mut added = 0;
        for nid in onvm_rpc_api::dag::order(&graph) {
            let Some(node) = nodes.remove(&nid) else {
                continue;
            };
            let call = self.resolve_call(&node, from).await?;
            let node_author = node.body.author;
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || {
                store.insert_foreign_dag(&node, call.as_ref())
            })
            .await
            {
                Ok(Ok(inserted)) => {
                    if inserted.new {
                        added += 1;
                    }
                    // A refused payload is the author's problem, not the relayer's: the node
                    // is validly signed, stored, and relaying it is what honest peers do.
                    // Its author signed it, though: when the author itself sent it, that
                    // counts against the author, so a peer cannot spam refused operations.
                    if let Some(reason) = &inserted.refused {
                        tracing::debug!(node = %nid, relayer = %from.id, "stored with its payload refused: {reason}");
                        if *from.id.as_bytes() == node_author.0 {
                            self.penalise(&from.id, format!("refused operation {nid}: {reason}"));
                        }
                    }
                    if let Some(event) = inserted.job_event {
                        // No subscriber is not an error.
                        let _ = self.job_events.send(event);
                    }
                }
                Ok(Err(e)) => return Err(format!("DAG node {nid} from {}: {e}", from.id)),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(added)
    }

    /// Blobs a node must hold before it stores `node`: a program's code and declared blobs (so
    /// it can run read-only calls), and a committed call's writes, input and output when they
    /// travel as blobs.
    fn required_blobs(node: &onvm_rpc_api::dag::DagNode) -> Vec<onvm_rpc_api::BlobId> {
        use onvm_rpc_api::dag::{DagPayload, DataRef};
        match &node.body.payload {
            DagPayload::ProgramDeployed { manifest } => {
                let mut ids = vec![manifest.manifest.code];
                ids.extend(manifest.manifest.blob_refs.iter().copied());
                ids
            }
            DagPayload::ExecutionCommitted {
                writes,
                input,
                output,
                ..
            } => [writes, input, output]
                .into_iter()
                .filter_map(|d| match d {
                    DataRef::Blob { blob, .. } => Some(*blob),
                    DataRef::Inline(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Fetches the blobs `node` needs that this node lacks from `from` (which holds them, by
    /// the same rule), BAO-verified and with the blob size cap checked before download; then
    /// returns a committed call's writes and input, checked against its receipt.
    async fn resolve_call(
        &self,
        node: &onvm_rpc_api::dag::DagNode,
        from: &iroh::EndpointAddr,
    ) -> Result<Option<crate::store::ReplicatedCall>, String> {
        use onvm_rpc_api::dag::DagPayload;
        let mut conn = None;
        for blob in Self::required_blobs(node) {
            if self.blobs.stat(blob).await.is_ok() {
                continue;
            }
            if conn.is_none() {
                conn = Some(
                    tokio::time::timeout(
                        DIAL_TIMEOUT,
                        self.endpoint.connect(from.clone(), iroh_blobs::ALPN),
                    )
                    .await
                    .map_err(|_| "timed out dialing for blobs".to_string())?
                    .map_err(|e| e.to_string())?,
                );
            }
            if let Some(c) = &conn {
                self.blobs
                    .fetch(c.clone(), blob, None)
                    .await
                    .map_err(|e| format!("fetching {blob} for DAG node {}: {e}", node.id()))?;
            }
        }
        let DagPayload::ExecutionCommitted {
            receipt,
            writes,
            input,
            output,
        } = &node.body.payload
        else {
            return Ok(None);
        };
        let writes = self.data_bytes(writes).await?;
        let input = self.data_bytes(input).await?;
        let output = self.data_bytes(output).await?;
        if onvm_rpc_api::Hash32::of(&input) != receipt.receipt.input_hash
            || onvm_rpc_api::Hash32::of(&output) != receipt.receipt.output_hash
        {
            return Err(format!(
                "the input or output of {} does not match its hash",
                receipt.id
            ));
        }
        Ok(Some(crate::store::ReplicatedCall {
            writes: onvm_rpc_api::program::decode_writes(&writes, &receipt.receipt.write_digest)?,
            input,
            output,
        }))
    }

    /// The bytes a DAG node carries inline, or reads from a blob this node holds.
    async fn data_bytes(&self, data: &onvm_rpc_api::dag::DataRef) -> Result<Vec<u8>, String> {
        match data {
            onvm_rpc_api::dag::DataRef::Inline(bytes) => Ok(bytes.0.clone()),
            onvm_rpc_api::dag::DataRef::Blob { blob, .. } => {
                self.blobs.read_all(*blob).await.map_err(|e| e.to_string())
            }
        }
    }

    /// One anti-entropy round with every known peer, all at once: an unreachable peer costs
    /// its own timeout, not everyone's.
    pub async fn sync_all(self: &std::sync::Arc<Self>) -> usize {
        let mut rounds = tokio::task::JoinSet::new();
        for addr in self.addrs() {
            if self.is_banned(&addr.id) {
                continue;
            }
            let this = self.clone();
            rounds.spawn(async move {
                match this.sync_dag(addr.clone()).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(peer = %addr.id, "DAG sync: {e}");
                        0
                    }
                }
            });
        }
        let mut added = 0;
        while let Some(r) = rounds.join_next().await {
            added += r.unwrap_or(0);
        }
        added
    }

    /// Finds a peer holding `hash` and opens an iroh-blobs connection to it, with the size it
    /// claims (verify it before trusting it) and its mime type.
    pub async fn find_blob(
        &self,
        hash: [u8; 32],
    ) -> Option<(iroh::endpoint::Connection, Option<String>)> {
        for addr in self.addrs() {
            let id = addr.id;
            let found = async {
                let conn = tokio::time::timeout(
                    DIAL_TIMEOUT,
                    self.endpoint.connect(addr.clone(), PEER_ALPN),
                )
                .await
                .ok()?
                .ok()?;
                match request(&conn, &PeerRequest::HasBlob { hash }).await.ok()? {
                    PeerResponse::HasBlob {
                        size: Some(_),
                        mime,
                    } => Some(mime),
                    _ => None,
                }
            }
            .await;
            if let Some(mime) = found {
                match tokio::time::timeout(
                    DIAL_TIMEOUT,
                    self.endpoint.connect(addr, iroh_blobs::ALPN),
                )
                .await
                {
                    Ok(Ok(conn)) => return Some((conn, mime)),
                    Ok(Err(e)) => self.mark(&id, Err(e.to_string())),
                    Err(_) => self.mark(&id, Err("timed out".into())),
                }
            }
        }
        None
    }

    /// Answers one peer request; `rtt_ms` is the QUIC round-trip estimate of the path the
    /// request came over (a peer that dialed us has a latency before we ever ping it).
    async fn answer(
        &self,
        remote: iroh::EndpointId,
        req: PeerRequest,
        rtt_ms: Option<f64>,
    ) -> PeerResponse {
        match req {
            PeerRequest::Hello(h) => {
                if self.remember(remote, &h, rtt_ms) {
                    PeerResponse::Hello(self.hello())
                } else {
                    PeerResponse::Refused {
                        reason: format!("this node is on network `{}`", self.network_id),
                    }
                }
            }
            PeerRequest::Ping { nonce } => PeerResponse::Pong { nonce },
            PeerRequest::DagHeads => {
                let store = self.store.clone();
                let heads = tokio::task::spawn_blocking(move || store.dag_heads())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                PeerResponse::DagHeads {
                    heads: heads.into_iter().map(|h| h.0).collect(),
                }
            }
            PeerRequest::DagGet { id } => {
                let store = self.store.clone();
                let node =
                    tokio::task::spawn_blocking(move || store.dag_node(&onvm_rpc_api::Hash32(id)))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                        .and_then(|n| postcard::to_allocvec(&n).ok());
                PeerResponse::DagNode { node }
            }
            PeerRequest::HasBlob { hash } => {
                let found = self
                    .blobs
                    .stat(onvm_rpc_api::BlobId::from_bytes(hash))
                    .await
                    .ok();
                PeerResponse::HasBlob {
                    size: found.as_ref().map(|f| f.size),
                    mime: found.and_then(|f| f.mime),
                }
            }
        }
    }
}

fn unreachable_info(id: iroh::EndpointId) -> onvm_rpc_api::types::PeerInfo {
    onvm_rpc_api::types::PeerInfo {
        endpoint_id: id.to_string(),
        ticket: String::new(),
        network_id: String::new(),
        version: String::new(),
        connection: "unknown".into(),
        latency_ms: None,
        last_seen_ms: 0,
        last_error: Some("not in the peer table".into()),
        rejected: 0,
    }
}

/// The QUIC round-trip estimate of the path a connection uses now (direct or relayed), in ms.
fn path_rtt_ms(conn: &iroh::endpoint::Connection) -> Option<f64> {
    let paths = conn.paths();
    let selected = paths.iter().find(|p| p.is_selected());
    selected.map(|p| p.rtt().as_secs_f64() * 1e3)
}

/// The accept side of [`PEER_ALPN`].
#[derive(Debug, Clone)]
pub struct PeerProtocol(pub std::sync::Arc<Peers>);

impl iroh::protocol::ProtocolHandler for PeerProtocol {
    async fn accept(
        &self,
        conn: iroh::endpoint::Connection,
    ) -> Result<(), iroh::protocol::AcceptError> {
        let remote = conn.remote_id();
        // One request per stream; the connection lives until the peer closes it.
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let peers = self.0.clone();
            let rtt_ms = path_rtt_ms(&conn);
            tokio::spawn(async move {
                let bytes = match recv.read_to_end(MAX_PEER_MESSAGE).await {
                    Ok(b) => b,
                    Err(iroh::endpoint::ReadToEndError::TooLong) => {
                        tracing::debug!(%remote, "peer message over {MAX_PEER_MESSAGE} bytes: stream reset");
                        let _ = recv.stop(iroh::endpoint::VarInt::from_u32(TOO_LONG));
                        let _ = send.reset(iroh::endpoint::VarInt::from_u32(TOO_LONG));
                        return;
                    }
                    Err(_) => return,
                };
                let Ok(req) = postcard::from_bytes::<PeerRequest>(&bytes) else {
                    tracing::debug!(%remote, "malformed peer message: stream reset");
                    let _ = send.reset(iroh::endpoint::VarInt::from_u32(MALFORMED));
                    return;
                };
                let reply = peers.answer(remote, req, rtt_ms).await;
                if let Ok(out) = postcard::to_allocvec(&reply) {
                    let _ = send.write_all(&out).await;
                    let _ = send.finish();
                }
            });
        }
        Ok(())
    }
}

// ---- forwarded calls ----

/// Versioned ALPN on which a program's home accepts calls and jobs accepted by other nodes.
pub const CALL_ALPN: &[u8] = b"/onvm/call/1";

/// A call forwarded to a program's home. JSON-encoded (the RPC types, errors with their
/// structured `data`), one per bi-directional stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardedCall {
    Execute {
        program_id: onvm_rpc_api::ProgramId,
        input_base64: onvm_rpc_api::types::Base64Bytes,
        options: onvm_rpc_api::program::ExecuteOptions,
    },
    SubmitJob {
        request: onvm_rpc_api::jobs::SubmitJob,
    },
    CancelJob {
        job_id: onvm_rpc_api::JobId,
    },
    /// Sequence this call although this node is not the home: the home and the members ranked
    /// before this one could not be reached (committee failover).
    ExecuteTakeover {
        program_id: onvm_rpc_api::ProgramId,
        input_base64: onvm_rpc_api::types::Base64Bytes,
        options: onvm_rpc_api::program::ExecuteOptions,
    },
    /// A committee member is asked to re-execute a proposed call and sign its receipt.
    Attest {
        receipt: Box<onvm_rpc_api::program::ExecutionReceipt>,
        input_base64: onvm_rpc_api::types::Base64Bytes,
    },
    /// A member taking over asks the others what they signed at `height` (a proposal of the
    /// previous sequencer that may have committed) and how far they have applied the program.
    VoteAt {
        program_id: onvm_rpc_api::ProgramId,
        height: u64,
    },
    /// Accept and run this job although this node is not the home: the home and the members
    /// ranked before this one could not be reached (job failover).
    SubmitJobTakeover {
        request: onvm_rpc_api::jobs::SubmitJob,
    },
}

/// The home's answer: the RPC result, or the RPC error it would have returned to a client.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardedReply {
    Executed {
        result: Box<onvm_rpc_api::program::ExecuteResult>,
    },
    Submitted {
        result: Box<onvm_rpc_api::jobs::SubmitResult>,
    },
    Cancelled {
        job: Box<onvm_rpc_api::jobs::JobInfo>,
    },
    /// The member's BLS signature over the receipt id.
    Attested { signature: onvm_rpc_api::HexBytes },
    /// The member's applied height of the program and its vote at the asked height, if any.
    Vote {
        applied_height: u64,
        vote: Option<Box<crate::store::Vote>>,
    },
    Error {
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
    },
}

/// Runs forwarded calls on the home (the RPC layer, which owns the error contract).
pub trait CallHandler: Send + Sync + 'static {
    fn handle(
        &self,
        from: iroh::EndpointId,
        call: ForwardedCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ForwardedReply> + Send>>;
}

/// Limits of the call protocol (config `net.max_forward_bytes`, `net.forward_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct ForwardLimits {
    pub max_bytes: usize,
    pub timeout: std::time::Duration,
    /// How long to wait for a connection (`net.forward_dial_timeout_ms`): past it the call was
    /// never delivered, and a committee program's call moves on to the next member.
    pub dial: std::time::Duration,
}

impl Peers {
    /// Installs the handler for calls other nodes forward here.
    pub fn set_call_handler(&self, handler: std::sync::Arc<dyn CallHandler>) {
        let _ = self.call_handler.set(handler);
    }

    /// Notes that a forwarded call to `peer` failed (it is tried last for `net.suspect_ms`).
    pub fn suspect(&self, peer: onvm_rpc_api::Hash32) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(peer, std::time::Instant::now());
    }

    /// Whether a forwarded call to `peer` failed within the last `net.suspect_ms`.
    pub fn is_suspected(&self, peer: &onvm_rpc_api::Hash32) -> bool {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let for_ = self.suspect_for;
        s.retain(|_, at| at.elapsed() < for_);
        s.contains_key(peer)
    }

    /// `peer` answered a forwarded call.
    pub fn clear_suspect(&self, peer: &onvm_rpc_api::Hash32) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(peer);
    }

    /// Sends `call` to `home` and waits for its reply (bounded by `net.forward_timeout_ms`).
    pub async fn forward(
        &self,
        home: onvm_rpc_api::Hash32,
        call: &ForwardedCall,
    ) -> Result<ForwardedReply, PeerError> {
        let id = iroh::EndpointId::from_bytes(&home.0).map_err(|e| PeerError::Unreachable {
            peer: home.to_string(),
            reason: format!("not an endpoint id: {e}"),
        })?;
        let unreachable = |reason: String| PeerError::Unreachable {
            peer: id.to_string(),
            reason,
        };
        let not_delivered = |reason: String| PeerError::NotDelivered {
            peer: id.to_string(),
            reason,
        };
        let addr = self
            .known_addr(&id)
            .ok_or_else(|| not_delivered("not a known peer of this node".into()))?;
        let limits = self.forward_limits;
        let conn = tokio::time::timeout(limits.dial, self.endpoint.connect(addr, CALL_ALPN))
            .await
            .map_err(|_| not_delivered(format!("no connection within {:?}", limits.dial)))?
            .map_err(|e| not_delivered(e.to_string()))?;
        let exchange = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let bytes = serde_json::to_vec(call).map_err(|e| unreachable(e.to_string()))?;
            if bytes.len() > limits.max_bytes {
                return Err(PeerError::Protocol {
                    peer: id.to_string(),
                    reason: format!(
                        "the call is {} bytes, over net.max_forward_bytes = {}",
                        bytes.len(),
                        limits.max_bytes
                    ),
                });
            }
            send.write_all(&bytes)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            send.finish().map_err(|e| unreachable(e.to_string()))?;
            let reply = recv
                .read_to_end(limits.max_bytes)
                .await
                .map_err(|e| unreachable(format!("reading the reply: {e}")))?;
            serde_json::from_slice(&reply).map_err(|e| PeerError::Protocol {
                peer: id.to_string(),
                reason: format!("malformed reply: {e}"),
            })
        };
        tokio::time::timeout(limits.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no reply within {:?}", limits.timeout)))?
    }

    /// Pulls the DAG from one known peer now (after a forwarded call, so the call's effects
    /// are visible here when the caller gets its answer).
    pub async fn sync_from(&self, peer: onvm_rpc_api::Hash32) -> Result<usize, String> {
        let id = iroh::EndpointId::from_bytes(&peer.0).map_err(|e| e.to_string())?;
        let addr = self
            .known_addr(&id)
            .ok_or_else(|| format!("{id} is not a known peer"))?;
        self.sync_dag(addr).await
    }
}

/// The accept side of [`CALL_ALPN`].
#[derive(Debug, Clone)]
pub struct CallProtocol(pub std::sync::Arc<Peers>);

impl iroh::protocol::ProtocolHandler for CallProtocol {
    async fn accept(
        &self,
        conn: iroh::endpoint::Connection,
    ) -> Result<(), iroh::protocol::AcceptError> {
        let remote = conn.remote_id();
        let max = self.0.forward_limits.max_bytes;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let peers = self.0.clone();
            tokio::spawn(async move {
                let reply = match recv.read_to_end(max).await {
                    Ok(bytes) => match serde_json::from_slice::<ForwardedCall>(&bytes) {
                        Ok(call) => match peers.call_handler.get() {
                            Some(handler) => handler.handle(remote, call).await,
                            None => ForwardedReply::Error {
                                code: onvm_rpc_api::error::UNAVAILABLE,
                                message: "this node is still starting".into(),
                                data: None,
                            },
                        },
                        Err(e) => ForwardedReply::Error {
                            code: onvm_rpc_api::error::INVALID_PARAMS,
                            message: format!("malformed forwarded call: {e}"),
                            data: None,
                        },
                    },
                    Err(iroh::endpoint::ReadToEndError::TooLong) => {
                        tracing::debug!(%remote, "forwarded call over {max} bytes: stream reset");
                        let _ = recv.stop(iroh::endpoint::VarInt::from_u32(TOO_LONG));
                        let _ = send.reset(iroh::endpoint::VarInt::from_u32(TOO_LONG));
                        return;
                    }
                    Err(_) => return,
                };
                if let Ok(mut out) = serde_json::to_vec(&reply) {
                    if out.len() > max {
                        out = serde_json::to_vec(&ForwardedReply::Error {
                            code: onvm_rpc_api::error::LIMIT_EXCEEDED,
                            message: format!(
                                "the reply is {} bytes, over net.max_forward_bytes = {max}",
                                out.len()
                            ),
                            data: None,
                        })
                        .unwrap_or_default();
                    }
                    let _ = send.write_all(&out).await;
                    let _ = send.finish();
                }
            });
        }
        Ok(())
    }
}
