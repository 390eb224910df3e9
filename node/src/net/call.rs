//! The call protocol ([`CALL_ALPN`]): calls, jobs and committee requests forwarded between
//! nodes, suspicion of members that did not answer, and the accept side that hands them to the
//! RPC layer's handler.

use super::wire::{CALL_ALPN, ForwardedCall, ForwardedReply, STOPPING, read_request};
use super::{PeerError, Peers};

/// Runs forwarded calls on the home (the RPC layer, which owns the error contract). `None`:
/// this node is shutting down and did not finish the call; the stream is reset, so the caller
/// sees a member that did not answer and tries the next one (with the same request id).
pub trait CallHandler: Send + Sync + 'static {
    fn handle(
        &self,
        from: iroh::EndpointId,
        call: ForwardedCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<ForwardedReply>> + Send>>;
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

    fn suspicion_clock_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes that a forwarded call to `peer` failed (it is tried last for `net.suspect_ms`),
    /// and, when that is news, tells the network (gossip), so other nodes do not pay the same
    /// dial timeout.
    pub fn suspect(&self, peer: onvm_rpc_api::Hash32) {
        let now = self.suspicion_clock_ms();
        let news = self
            .suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .suspect(peer, now);
        if news {
            self.broadcast_liveness(peer, false);
        }
    }

    /// Another node reported that its call to `peer` failed.
    pub(super) fn suspicion_reported(&self, peer: onvm_rpc_api::Hash32) {
        let now = self.suspicion_clock_ms();
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.reported(peer, now);
    }

    /// `peer` itself said it is alive.
    pub(super) fn suspicion_refuted(&self, peer: &onvm_rpc_api::Hash32) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.refuted(peer);
    }

    pub(super) fn suspicion_window_ms(&self) -> u64 {
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .window_ms()
    }

    /// Rate limit of "alive" answers: true at most once per second.
    pub(super) fn may_refute_now(&self) -> bool {
        let now = self.suspicion_clock_ms();
        let last = self
            .last_refuted_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 1_000 {
            return false;
        }
        self.last_refuted_ms
            .store(now.max(1), std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Whether a forwarded call to `peer` failed within the last `net.suspect_ms`.
    pub fn is_suspected(&self, peer: &onvm_rpc_api::Hash32) -> bool {
        let now = self.suspicion_clock_ms();
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.is_suspected(peer, now)
    }

    /// Whether this node's own forwarded call to `peer` failed within `net.suspect_ms` (other
    /// nodes' reports do not count: a member is skipped only on this node's evidence).
    pub fn failed_here(&self, peer: &onvm_rpc_api::Hash32) -> bool {
        let now = self.suspicion_clock_ms();
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.failed_here(peer, now)
    }

    /// `peer` answered a forwarded call.
    pub fn clear_suspect(&self, peer: &onvm_rpc_api::Hash32) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.clear(peer);
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
            self.0.tasks.spawn(async move {
                let Some(bytes) = read_request(&mut send, &mut recv, max, remote).await else {
                    return;
                };
                let reply = match serde_json::from_slice::<ForwardedCall>(&bytes) {
                    Ok(call) => match peers.call_handler.get() {
                        Some(handler) => match handler.handle(remote, call).await {
                            Some(reply) => reply,
                            None => {
                                let _ = send.reset(iroh::endpoint::VarInt::from_u32(STOPPING));
                                return;
                            }
                        },
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
