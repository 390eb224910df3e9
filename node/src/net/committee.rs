//! The committee protocol ([`COMMITTEE_ALPN`]): consensus messages between the members of a
//! program's committee, one encoded envelope per unidirectional stream, on one cached
//! connection per peer. Best effort by design: the consensus core retransmits what matters,
//! so a lost or reordered message costs only time. This layer moves opaque bytes; the
//! consensus layer encodes them, authenticates the sender as a committee member (by the
//! endpoint id QUIC authenticated) and checks every attachment.

use std::sync::Arc;

use super::Peers;
use super::wire::COMMITTEE_ALPN;

/// The connection to one committee peer, dialed once and shared by every send.
pub(super) type ConnectionSlot = Arc<tokio::sync::Mutex<Option<iroh::endpoint::Connection>>>;

/// Receives committee envelopes (the consensus layer).
pub trait CommitteeHandler: Send + Sync + 'static {
    fn receive(
        &self,
        from: iroh::EndpointId,
        envelope: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

impl Peers {
    /// Installs the receiver of committee envelopes.
    pub fn set_committee_handler(&self, handler: Arc<dyn CommitteeHandler>) {
        let _ = self.committee_handler.set(handler);
    }

    /// Sends one envelope to `to` in the background (dropped, with a debug log, when the
    /// peer cannot be reached or the envelope is over `net.max_forward_bytes`).
    pub fn send_committee(self: &Arc<Self>, to: onvm_rpc_api::Hash32, envelope: Vec<u8>) {
        let peers = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = peers.deliver_committee(to, &envelope).await {
                tracing::debug!(peer = %to, "committee message not delivered: {e}");
            }
        });
    }

    async fn deliver_committee(
        &self,
        to: onvm_rpc_api::Hash32,
        envelope: &[u8],
    ) -> Result<(), String> {
        if envelope.len() > self.forward_limits.max_bytes {
            return Err(format!(
                "{} bytes, over net.max_forward_bytes = {}",
                envelope.len(),
                self.forward_limits.max_bytes
            ));
        }
        let id = iroh::EndpointId::from_bytes(&to.0).map_err(|e| e.to_string())?;
        // One connection per peer: concurrent sends wait for the same dial instead of each
        // opening its own, since a connection whose last handle is dropped closes at once and
        // loses the streams still in flight on it.
        let slot = self
            .committee_conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        let conn = {
            let mut slot = slot.lock().await;
            match slot.as_ref().filter(|c| c.close_reason().is_none()) {
                Some(conn) => conn.clone(),
                None => {
                    let addr = self
                        .known_addr(&id)
                        .ok_or_else(|| "not a known peer of this node".to_string())?;
                    let conn = tokio::time::timeout(
                        self.forward_limits.dial,
                        self.endpoint.connect(addr, COMMITTEE_ALPN),
                    )
                    .await
                    .map_err(|_| format!("no connection within {:?}", self.forward_limits.dial))?
                    .map_err(|e| e.to_string())?;
                    *slot = Some(conn.clone());
                    conn
                }
            }
        };
        let sent = async {
            let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
            stream
                .write_all(envelope)
                .await
                .map_err(|e| e.to_string())?;
            stream.finish().map_err(|e| e.to_string())
        };
        let result = tokio::time::timeout(self.forward_limits.timeout, sent)
            .await
            .unwrap_or_else(|_| Err("sending timed out".into()));
        if result.is_err() {
            *slot.lock().await = None;
        }
        result
    }
}

/// The accept side of [`COMMITTEE_ALPN`].
#[derive(Debug, Clone)]
pub struct CommitteeProtocol(pub Arc<Peers>);

impl iroh::protocol::ProtocolHandler for CommitteeProtocol {
    async fn accept(
        &self,
        conn: iroh::endpoint::Connection,
    ) -> Result<(), iroh::protocol::AcceptError> {
        let remote = conn.remote_id();
        let max = self.0.forward_limits.max_bytes;
        while let Ok(mut recv) = conn.accept_uni().await {
            let peers = self.0.clone();
            self.0.tasks.spawn(async move {
                let bytes = match recv.read_to_end(max).await {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::debug!(%remote, "committee message dropped: {e}");
                        return;
                    }
                };
                if let Some(handler) = peers.committee_handler.get() {
                    handler.receive(remote, bytes).await;
                }
            });
        }
        Ok(())
    }
}
