//! The operation DAG as clients read it: heads, single nodes, and the arrival log that
//! subscriptions follow. Storage is `store::dag`; replication is `net`. Calls block: run them
//! off the async threads.

use onvm_rpc_api::Hash32;
use onvm_rpc_api::dag::{DagHeads, DagNode, RefusedNode};

use crate::store::{Store, StoreError};

/// How many refused nodes `heads` lists (the newest).
const REFUSED_SHOWN: usize = 16;

#[derive(Clone)]
pub struct DagLog {
    store: Store,
}

impl DagLog {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn heads(&self) -> Result<DagHeads, StoreError> {
        Ok(DagHeads {
            heads: self.store.dag_heads()?,
            count: self.store.dag_len()?,
            refused: self
                .store
                .refused_dag_nodes(REFUSED_SHOWN)?
                .into_iter()
                .map(|(id, reason)| RefusedNode { id, reason })
                .collect(),
            deferred: self.store.deferred_calls()?,
        })
    }

    pub fn node(&self, id: &Hash32) -> Result<Option<DagNode>, StoreError> {
        self.store.dag_node(id)
    }

    /// The arrival sequence of the newest node (0 when there is none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.store.dag_last_seq()
    }

    /// Up to `limit` nodes that arrived after sequence `seq`, with their sequence.
    pub fn after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, DagNode)>, StoreError> {
        self.store.dag_log_after(seq, limit)
    }

    /// Whether `id` announced itself in this network's DAG (only such nodes are served).
    pub fn is_announced(&self, id: &Hash32) -> Result<bool, StoreError> {
        self.store.is_announced(id)
    }

    /// Changes whenever nodes may have been added (a wake-up, never the data itself).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.dag_changes()
    }
}
