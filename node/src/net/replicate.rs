//! Blob mode `full`: copy every blob announced in the DAG (`BlobPublished`) as soon as the
//! announcement is stored, BAO-verified, from any peer that has it, with the size cap checked
//! before download. Mode `metadata` does none of this (blobs are fetched on first read).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use onvm_rpc_api::BlobId;
use onvm_rpc_api::dag::DagPayload;

use super::Peers;
use crate::blobs::BlobError;

/// Blobs no peer could serve yet are retried this often (and on every new DAG node).
const RETRY: Duration = Duration::from_secs(5);

pub(super) async fn replicate_all_blobs(peers: Arc<Peers>) {
    let store = peers.store.clone();
    let mut changes = store.dag_changes();
    // From the start of the log: a node switched to `full` copies the history too.
    let mut cursor = 0;
    let mut missing: BTreeMap<BlobId, u64> = BTreeMap::new();
    loop {
        loop {
            let s = store.clone();
            let after = cursor;
            let batch = match tokio::task::spawn_blocking(move || s.dag_log_after(after, 512)).await
            {
                Ok(Ok(b)) => b,
                _ => break,
            };
            if batch.is_empty() {
                break;
            }
            for (seq, node) in batch {
                cursor = seq;
                if let DagPayload::BlobPublished { blob, size, .. } = node.body.payload {
                    missing.insert(blob, size);
                }
            }
        }
        let wanted: Vec<(BlobId, u64)> = missing.iter().map(|(b, s)| (*b, *s)).collect();
        for (blob, size) in wanted {
            if peers.blobs.stat(blob).await.is_ok() {
                missing.remove(&blob);
                continue;
            }
            let Some((conn, mime)) = peers.find_blob(*blob.as_bytes()).await else {
                continue;
            };
            match peers.blobs.fetch(conn, blob, mime).await {
                Ok(_) => {
                    missing.remove(&blob);
                }
                Err(e @ BlobError::TooLarge { .. }) => {
                    tracing::warn!(%blob, size, "not replicating: {e}");
                    missing.remove(&blob);
                }
                Err(e) => tracing::debug!(%blob, "replicating: {e}"),
            }
        }
        if missing.is_empty() {
            if changes.changed().await.is_err() {
                return;
            }
        } else {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}
