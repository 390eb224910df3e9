//! DAG push over iroh-gossip: every DAG node this node authors goes out on the network's topic
//! as soon as its transaction commits; nodes received there are validated and stored like
//! pulled ones. Gossip is best effort (messages can be missed while a peer is away or lagging);
//! the periodic pull sync (`sync.rs`) repairs whatever it misses.

use std::sync::Arc;

use iroh_gossip::api::{Event, GossipReceiver, GossipSender};
use iroh_gossip::proto::TopicId;
use n0_future::StreamExt;
use onvm_rpc_api::Hash32;
use onvm_rpc_api::dag::DagNode;

use super::Peers;
use super::wire::{GOSSIP_VARIANTS, GossipMessage, LivenessReport};

/// Domain tag of the DAG topic id.
pub const TOPIC_TAG: &[u8] = b"onvm/dag-topic/v1";
/// Room the gossip framing needs beside a payload (a payload must stay this far under the
/// configured maximum, or iroh-gossip drops it silently).
const GOSSIP_OVERHEAD: usize = 128;
/// Local nodes read from the log per batch.
const PUBLISH_BATCH: usize = 256;

/// The network's DAG topic: BLAKE3 of the tag and the network id.
pub fn topic_id(network_id: &str) -> TopicId {
    let mut h = blake3::Hasher::new();
    h.update(TOPIC_TAG).update(network_id.as_bytes());
    TopicId::from_bytes(*h.finalize().as_bytes())
}

/// The largest payload this node broadcasts for a gossip maximum of `max_message`.
pub fn max_payload(max_message: usize) -> usize {
    max_message.saturating_sub(GOSSIP_OVERHEAD)
}

/// Broadcasts the nodes this node authors, in log order, from the moment it starts (older ones
/// reach peers by sync).
pub(super) async fn publish(peers: Arc<Peers>) {
    let store = peers.store.clone();
    let mut changes = store.dag_changes();
    let me = Hash32(*peers.endpoint.id().as_bytes());
    let start = store.clone();
    let mut cursor = tokio::task::spawn_blocking(move || start.dag_last_seq())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    while changes.changed().await.is_ok() {
        loop {
            let s = store.clone();
            let batch =
                match tokio::task::spawn_blocking(move || s.dag_log_after(cursor, PUBLISH_BATCH))
                    .await
                {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        tracing::warn!("reading the DAG log for gossip: {e}");
                        break;
                    }
                    Err(_) => return,
                };
            if batch.is_empty() {
                break;
            }
            for (seq, node) in batch {
                cursor = seq;
                if node.body.author == me {
                    broadcast(&peers, &node).await;
                }
            }
        }
    }
}

async fn broadcast(peers: &Peers, node: &DagNode) {
    let Some(sender) = peers.gossip_sender() else {
        return;
    };
    let Ok(bytes) =
        postcard::to_allocvec(node).and_then(|n| postcard::to_allocvec(&GossipMessage::DagNode(n)))
    else {
        return;
    };
    if bytes.len() > max_payload(peers.max_gossip_bytes) {
        tracing::debug!(
            id = %node.id(),
            size = bytes.len(),
            "DAG node over the gossip limit: peers will pull it by sync"
        );
        return;
    }
    if let Err(e) = sender.broadcast(bytes.into()).await {
        tracing::debug!("gossip broadcast: {e}");
    }
}

/// Joins the topic and handles what arrives; rejoins when the subscription ends (a lagging
/// subscriber is closed by iroh-gossip) until the endpoint closes.
pub(super) async fn receive(peers: Arc<Peers>, gossip: iroh_gossip::net::Gossip) {
    let topic = topic_id(&peers.network_id);
    while !peers.endpoint.is_closed() {
        let bootstrap = peers.ids();
        match gossip.subscribe(topic, bootstrap).await {
            Ok(sub) => {
                let (sender, receiver) = sub.split();
                peers.set_gossip_sender(sender);
                handle_events(&peers, receiver).await;
            }
            Err(e) => tracing::debug!("joining the DAG topic: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn handle_events(peers: &Arc<Peers>, mut receiver: GossipReceiver) {
    while let Some(event) = receiver.next().await {
        match event {
            Ok(Event::Received(msg)) => {
                peers.on_gossip(msg.delivered_from, &msg.content).await;
            }
            Ok(Event::Lagged) => {
                tracing::debug!("gossip receiver lagged; sync repairs the gap");
                return;
            }
            Ok(Event::NeighborUp(_) | Event::NeighborDown(_)) => {}
            Err(e) => {
                tracing::debug!("gossip subscription ended: {e}");
                return;
            }
        }
    }
}

impl Peers {
    pub(super) fn gossip_sender(&self) -> Option<GossipSender> {
        self.gossip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set_gossip_sender(&self, sender: GossipSender) {
        *self.gossip.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }

    /// One gossip message from neighbour `from` (which relayed it; the author may be anyone).
    /// Malformed or invalid nodes are dropped and counted against `from`; a valid node whose
    /// parents are missing makes this node pull from `from`; others are stored at once.
    pub(super) async fn on_gossip(self: &Arc<Self>, from: iroh::EndpointId, content: &[u8]) {
        if self.is_banned(&from) {
            return;
        }
        if content.len() > max_payload(self.max_gossip_bytes) {
            self.penalise(&from, format!("gossip message of {} bytes", content.len()));
            return;
        }
        let node = match postcard::from_bytes::<GossipMessage>(content) {
            Ok(GossipMessage::DagNode(bytes)) => match postcard::from_bytes::<DagNode>(&bytes) {
                Ok(node) => node,
                Err(e) => {
                    self.penalise(&from, format!("malformed DAG node in gossip: {e}"));
                    return;
                }
            },
            Ok(GossipMessage::Liveness { report, signature }) => {
                self.on_liveness(&from, report, &signature).await;
                return;
            }
            Err(_) if is_newer_variant(content) => {
                tracing::debug!(%from, "gossip message of a newer version: ignored");
                return;
            }
            Err(e) => {
                self.penalise(&from, format!("malformed gossip message: {e}"));
                return;
            }
        };
        let id = match node.validate_alone(&self.network_id) {
            Ok(id) => id,
            Err(e) => {
                self.penalise(&from, format!("invalid DAG node in gossip: {e}"));
                return;
            }
        };
        let store = self.store.clone();
        let parents = node.body.parents.clone();
        let known = tokio::task::spawn_blocking(move || -> Result<(bool, bool), String> {
            let have = store.has_dag_node(&id).map_err(|e| e.to_string())?;
            let mut all = true;
            for p in &parents {
                all &= store.has_dag_node(p).map_err(|e| e.to_string())?;
            }
            Ok((have, all))
        })
        .await;
        let Ok(Ok((have, parents_known))) = known else {
            return;
        };
        if have {
            return;
        }
        if !parents_known {
            // Pull what is missing from whoever relayed it; if it cannot serve the parents
            // either, the node is dropped here and arrives later by sync from anyone.
            self.request_sync(from);
            return;
        }
        // The author holds the blobs the node needs (code, writes); the relayer may not yet.
        let author = iroh::EndpointId::from_bytes(&node.body.author.0).ok();
        let source = author
            .filter(|a| self.is_known(a))
            .map(|a| self.addr_of(&a))
            .unwrap_or_else(|| self.addr_of(&from));
        let mut one = std::collections::HashMap::new();
        one.insert(id, node);
        if let Err(e) = self.ingest(&source, one).await {
            tracing::debug!(%from, "storing a gossiped DAG node: {e}");
            self.request_sync(from);
        }
    }

    /// Tells the network "my call to `subject` failed" (`alive: false`), or "I am alive"
    /// (`subject` is this node), signed with the endpoint key. Best effort, in the background.
    pub(super) fn broadcast_liveness(&self, subject: Hash32, alive: bool) {
        let Some(sender) = self.gossip_sender() else {
            return;
        };
        let report = LivenessReport {
            network_id: self.network_id.clone(),
            reporter: *self.endpoint.id().as_bytes(),
            subject: subject.0,
            alive,
            at_ms: crate::util::now_ms(),
        };
        let signature = self
            .endpoint
            .secret_key()
            .sign(&report.signing_message())
            .to_bytes()
            .to_vec();
        let Ok(bytes) = postcard::to_allocvec(&GossipMessage::Liveness { report, signature })
        else {
            return;
        };
        self.tasks.spawn(async move {
            if let Err(e) = sender.broadcast(bytes.into()).await {
                tracing::debug!("gossip broadcast of a liveness report: {e}");
            }
        });
    }

    /// A liveness report relayed by `from`. A forged or foreign one counts against `from`; a
    /// stale one (older than `net.suspect_ms` by this node's clock) or one from a node not
    /// announced in the DAG is dropped. A report that this node is down is answered at once
    /// with "alive" (at most once per second).
    async fn on_liveness(&self, from: &iroh::EndpointId, report: LivenessReport, signature: &[u8]) {
        let me = *self.endpoint.id().as_bytes();
        let signed = iroh::EndpointId::from_bytes(&report.reporter)
            .ok()
            .zip(<[u8; 64]>::try_from(signature).ok())
            .is_some_and(|(key, sig)| {
                key.verify(
                    &report.signing_message(),
                    &iroh::Signature::from_bytes(&sig),
                )
                .is_ok()
            });
        if !signed || report.network_id != self.network_id {
            self.penalise(
                from,
                "liveness report with a bad signature or network".into(),
            );
            return;
        }
        if report.reporter == me
            || (report.alive && report.reporter != report.subject)
            || (!report.alive && report.reporter == report.subject)
        {
            return;
        }
        let window = self.suspicion_window_ms();
        if crate::util::now_ms().abs_diff(report.at_ms) > window {
            return;
        }
        let store = self.store.clone();
        let reporter = Hash32(report.reporter);
        let announced = tokio::task::spawn_blocking(move || store.is_announced(&reporter))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if !announced {
            return;
        }
        let subject = Hash32(report.subject);
        if report.alive {
            self.suspicion_refuted(&subject);
        } else if report.subject == me {
            if self.may_refute_now() {
                self.broadcast_liveness(subject, true);
            }
        } else {
            tracing::debug!(%reporter, %subject, "a node reports it could not reach a member");
            self.suspicion_reported(subject);
        }
    }

    /// Starts one pull from `peer` unless one is already running.
    pub(super) fn request_sync(self: &Arc<Self>, peer: iroh::EndpointId) {
        {
            let mut syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
            if !syncing.insert(peer) {
                return;
            }
        }
        let this = self.clone();
        self.tasks.spawn(async move {
            let addr = this.addr_of(&peer);
            if let Err(e) = this.sync_dag(addr).await {
                tracing::debug!(%peer, "DAG sync after gossip: {e}");
            }
            this.syncing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&peer);
        });
    }
}

/// Whether `content` starts with a gossip variant index this version does not know.
fn is_newer_variant(content: &[u8]) -> bool {
    postcard::take_from_bytes::<u32>(content)
        .is_ok_and(|(variant, _)| u64::from(variant) >= GOSSIP_VARIANTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_variant_indexes_count_as_newer_messages() {
        let dag = postcard::to_allocvec(&GossipMessage::DagNode(vec![1, 2, 3])).unwrap();
        let report = LivenessReport {
            network_id: "n".into(),
            reporter: [1; 32],
            subject: [2; 32],
            alive: false,
            at_ms: 5,
        };
        let liveness = postcard::to_allocvec(&GossipMessage::Liveness {
            report: report.clone(),
            signature: vec![0; 64],
        })
        .unwrap();
        assert!(!is_newer_variant(&dag));
        assert!(!is_newer_variant(&liveness));
        // A variant this version does not know, whatever follows it.
        assert!(is_newer_variant(&[2, 0xff, 0xff]));
        assert!(is_newer_variant(&[0x80, 0x01]));
        // Garbage that is not even a variant index is malformed, not newer.
        assert!(!is_newer_variant(&[]));
        assert!(!is_newer_variant(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        // The signed bytes bind every field.
        let mut other = report.clone();
        other.alive = true;
        assert_ne!(report.signing_message(), other.signing_message());
        assert!(report.signing_message().starts_with(b"onvm/liveness/v1\0"));
    }
}
