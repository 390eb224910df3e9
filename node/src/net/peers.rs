//! The peer table and the peer protocol ([`PEER_ALPN`]): joining by ticket, hellos that spread
//! tickets, pings (latency and liveness), penalties and bans for invalid messages, and the
//! accept side that answers peers' requests.

use iroh::Endpoint;
use iroh_tickets::endpoint::EndpointTicket;

use super::call::{CallHandler, ForwardLimits};
use super::wire::{
    Hello, MALFORMED, MAX_PEER_MESSAGE, PEER_ALPN, PeerRequest, PeerResponse, read_request,
};

/// Invalid messages (forged, malformed or refused DAG nodes) after which a peer is ignored.
pub const BAN_AFTER: u32 = 16;
/// At most this many peers are learned from others' hellos.
const MAX_PEERS: usize = 64;
pub(super) const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
pub(super) struct PeerEntry {
    pub(super) addr: iroh::EndpointAddr,
    pub(super) network_id: String,
    pub(super) version: String,
    pub(super) last_seen_ms: u64,
    pub(super) latency_ms: Option<f64>,
    pub(super) last_error: Option<String>,
}

/// The peer registry and the protocol, shared by the accept side and the dial side.
pub struct Peers {
    /// Every task spawned for peers (dials, requests being answered).
    pub(super) tasks: super::Tasks,
    pub(super) endpoint: Endpoint,
    pub(super) network_id: String,
    pub(super) blobs: crate::blobs::Blobs,
    pub(super) store: crate::store::Store,
    /// Wakes job subscribers when a replicated job changes.
    pub(super) job_events: tokio::sync::broadcast::Sender<onvm_rpc_api::jobs::JobEvent>,
    pub(super) call_handler: std::sync::OnceLock<std::sync::Arc<dyn CallHandler>>,
    pub(super) committee_handler:
        std::sync::OnceLock<std::sync::Arc<dyn super::committee::CommitteeHandler>>,
    /// One connection per committee peer, reused for every PBFT message.
    pub(super) committee_conns: std::sync::Mutex<
        std::collections::HashMap<iroh::EndpointId, super::committee::ConnectionSlot>,
    >,
    pub(super) forward_limits: ForwardLimits,
    pub(super) memory: iroh::address_lookup::memory::MemoryLookup,
    pub(super) max_gossip_bytes: usize,
    /// The current gossip subscription's sender (replaced when the receiver rejoins).
    pub(super) gossip: std::sync::Mutex<Option<iroh_gossip::api::GossipSender>>,
    /// How far this node has read each peer's DAG log (`DagLogAfter` positions), so the next
    /// range pull goes on from there.
    pub(super) log_cursors: std::sync::Mutex<std::collections::HashMap<iroh::EndpointId, u64>>,
    /// Peers a pull is running from (at most one at a time each).
    pub(super) syncing: std::sync::Mutex<std::collections::HashSet<iroh::EndpointId>>,
    /// Invalid messages each peer sent; at [`BAN_AFTER`] the peer is ignored.
    pub(super) rejected: std::sync::Mutex<std::collections::HashMap<iroh::EndpointId, u32>>,
    pub(super) known: std::sync::Mutex<std::collections::HashMap<iroh::EndpointId, PeerEntry>>,
    /// Peers a forwarded call recently failed to reach, and when (config `net.suspect_ms`).
    pub(super) suspects: std::sync::Mutex<crate::consensus::routing::Suspicion>,
    /// The clock of `suspects` (milliseconds since this instant).
    pub(super) started: std::time::Instant,
    /// When this node last said "alive" after a report that it was down (`suspects` clock).
    pub(super) last_refuted_ms: std::sync::atomic::AtomicU64,
}

pub(super) async fn request(
    conn: &iroh::endpoint::Connection,
    req: &PeerRequest,
) -> Result<PeerResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let bytes = postcard::to_allocvec(req).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply = recv
        .read_to_end(super::wire::MAX_PEER_REPLY)
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
    pub(super) fn hello(&self) -> Hello {
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
    pub(super) fn remember(
        &self,
        id: iroh::EndpointId,
        hello: &Hello,
        latency_ms: Option<f64>,
    ) -> bool {
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
            self.tasks.spawn(async move {
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
            self.tasks.spawn(async move {
                if let Err(e) = this.dial(&other).await {
                    tracing::debug!("dialing a peer learned by hello: {e}");
                }
            });
        }
        Ok(info)
    }

    /// One hello exchange; returns the peer and the tickets it knows that this node does not.
    pub(super) async fn dial(
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

    pub(super) async fn info(
        &self,
        id: &iroh::EndpointId,
    ) -> Option<onvm_rpc_api::types::PeerInfo> {
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
            suspected: self.is_suspected(&onvm_rpc_api::Hash32(*id.as_bytes())),
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

    pub(super) fn addrs(&self) -> Vec<iroh::EndpointAddr> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|p| p.addr.clone())
            .collect()
    }

    /// Known peer ids (gossip bootstrap).
    pub(super) fn ids(&self) -> Vec<iroh::EndpointId> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub(super) fn is_known(&self, id: &iroh::EndpointId) -> bool {
        self.known_addr(id).is_some()
    }

    /// The address this node knows for a peer, if it is in the peer table.
    pub(super) fn known_addr(&self, id: &iroh::EndpointId) -> Option<iroh::EndpointAddr> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|p| p.addr.clone())
    }

    /// The peer's known address, or just its id (resolved by address lookup).
    pub(super) fn addr_of(&self, id: &iroh::EndpointId) -> iroh::EndpointAddr {
        self.known_addr(id)
            .unwrap_or_else(|| iroh::EndpointAddr::new(*id))
    }

    /// Counts an invalid message against `id` (shown in `peer_list`); at [`BAN_AFTER`] the
    /// peer's gossip, hellos and sync are ignored until this node restarts.
    pub(super) fn penalise(&self, id: &iroh::EndpointId, reason: String) {
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

    pub(super) fn is_banned(&self, id: &iroh::EndpointId) -> bool {
        self.rejected_count(id) >= BAN_AFTER
    }

    pub(super) fn rejected_count(&self, id: &iroh::EndpointId) -> u32 {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn mark(&self, id: &iroh::EndpointId, result: Result<f64, String>) {
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
}

impl Peers {
    /// Answers one peer request; `rtt_ms` is the QUIC round-trip estimate of the path the
    /// request came over (a peer that dialed us has a latency before we ever ping it).
    pub(super) async fn answer(
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
            PeerRequest::DagLogAfter { after_seq, limit } => {
                let store = self.store.clone();
                let limit = limit.clamp(1, super::wire::MAX_DAG_LOG_BATCH) as usize;
                let page =
                    tokio::task::spawn_blocking(move || store.dag_log_after(after_seq, limit))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                // Leave room for the reply's framing: nodes beyond the byte budget come in the
                // next request.
                let budget = super::wire::MAX_PEER_REPLY - 64 * 1024;
                let mut used = 0;
                let mut nodes = Vec::new();
                for (seq, node) in page {
                    let Ok(bytes) = postcard::to_allocvec(&node) else {
                        break;
                    };
                    used += bytes.len() + 16;
                    if used > budget && !nodes.is_empty() {
                        break;
                    }
                    nodes.push((seq, bytes));
                }
                PeerResponse::DagLog { nodes }
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
        suspected: false,
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
            self.0.tasks.spawn(async move {
                let Some(bytes) =
                    read_request(&mut send, &mut recv, MAX_PEER_MESSAGE, remote).await
                else {
                    return;
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
