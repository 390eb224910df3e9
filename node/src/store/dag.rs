//! DAG tables: every local operation becomes a signed DAG node, appended in the same
//! transaction as the operation itself, so the log and the state never disagree.

use std::sync::Arc;

use onvm_rpc_api::Hash32;
use onvm_rpc_api::dag::{DagNode, DagPayload, MAX_PARENTS, build_node};
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use super::{Store, StoreError, decode, encode};

/// Node id -> postcard DagNode.
const DAG_NODES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("dag_nodes");
/// Current heads (nodes no stored node names as a parent).
const DAG_HEADS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("dag_heads");
/// Arrival order on this node -> node id (a cursor for subscribers and sync).
const DAG_LOG: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("dag_log");

/// An ed25519 signature function (the node's endpoint key).
pub type Signer = Arc<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

/// Who signs this node's DAG nodes.
#[derive(Clone)]
pub struct DagAuthor {
    pub author: Hash32,
    pub network_id: String,
    pub sign: Signer,
}

impl std::fmt::Debug for DagAuthor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DagAuthor")
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
}

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(DAG_NODES)?;
    tx.open_table(DAG_HEADS)?;
    tx.open_table(DAG_LOG)?;
    Ok(())
}

/// Appends a node for `payload` on top of the current heads (at most `MAX_PARENTS` of them;
/// any others stay heads and are picked up by the next node). No author set: nothing recorded.
pub(super) fn append(
    tx: &WriteTransaction,
    author: Option<&DagAuthor>,
    payload: DagPayload,
) -> Result<Option<Hash32>, StoreError> {
    let Some(author) = author else {
        return Ok(None);
    };
    let mut heads = tx.open_table(DAG_HEADS)?;
    let mut parents = Vec::new();
    for entry in heads.iter()?.take(MAX_PARENTS) {
        let (k, _) = entry?;
        parents.push(Hash32(*k.value()));
    }
    let node = build_node(
        &author.network_id,
        author.author,
        parents.iter().copied(),
        crate::util::now_ms(),
        payload,
        |m| (author.sign)(m),
    );
    let id = node.id();
    tx.open_table(DAG_NODES)?
        .insert(&id.0, encode(&node).as_slice())?;
    for p in &parents {
        heads.remove(&p.0)?;
    }
    heads.insert(&id.0, ())?;
    let mut log = tx.open_table(DAG_LOG)?;
    let seq = log.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
    log.insert(seq, &id.0)?;
    Ok(Some(id))
}

/// Applies what a peer's operation means for this node's tables, in the transaction that
/// stores the DAG node: programs join the catalog, receipts become queryable and move the
/// catalog's root and height. Program state and jobs are not replicated yet (the DAG does not
/// carry writes): calls and state reads go to the program's home.
fn apply_replicated(tx: &WriteTransaction, payload: &DagPayload) -> Result<(), StoreError> {
    match payload {
        DagPayload::ProgramDeployed { manifest } => {
            let id = manifest.manifest.program_id;
            let mut programs = tx.open_table(super::PROGRAMS)?;
            if programs.get(id.as_bytes())?.is_none() {
                let record = super::ProgramRecord {
                    manifest: (**manifest).clone(),
                    state_root: manifest.manifest.initial_state_root,
                    height: 0,
                    keys: 0,
                    last_timestamp_ms: 0,
                };
                programs.insert(id.as_bytes(), encode(&record).as_slice())?;
            }
        }
        DagPayload::ExecutionCommitted { receipt, .. } => {
            let key = super::receipt_key(&receipt.receipt.program_id, receipt.receipt.height);
            let mut receipts = tx.open_table(super::RECEIPTS)?;
            if receipts.get(&key)?.is_none() {
                receipts.insert(&key, encode(&**receipt).as_slice())?;
                tx.open_table(super::RECEIPT_INDEX)?
                    .insert(receipt.id.as_bytes(), &key)?;
            }
            // The catalog shows the home's latest committed root and height (from receipts
            // that verified); the state itself stays on the home node for now.
            let mut programs = tx.open_table(super::PROGRAMS)?;
            let current = programs
                .get(receipt.receipt.program_id.as_bytes())?
                .map(|v| decode::<super::ProgramRecord>("programs", v.value()))
                .transpose()?;
            if let Some(mut record) = current
                && receipt.receipt.height + 1 > record.height
            {
                record.height = receipt.receipt.height + 1;
                record.state_root = receipt.receipt.state_root_out;
                record.last_timestamp_ms = receipt.receipt.timestamp_ms;
                programs.insert(
                    receipt.receipt.program_id.as_bytes(),
                    encode(&record).as_slice(),
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}

impl Store {
    /// From now on, operations are recorded as DAG nodes signed by `author`.
    pub fn set_dag_author(&self, author: DagAuthor) {
        let _ = self.dag_author.set(author);
    }

    pub(super) fn author(&self) -> Option<&DagAuthor> {
        self.dag_author.get()
    }

    /// Records an operation that has no other table to share a transaction with.
    pub fn record_dag(&self, payload: DagPayload) -> Result<Option<Hash32>, StoreError> {
        let tx = self.db.begin_write()?;
        let id = append(&tx, self.author(), payload)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores a node received from a peer (already validated by the caller) whose parents are
    /// all stored. Returns false if it was already known.
    pub fn insert_foreign_dag(&self, node: &DagNode) -> Result<bool, StoreError> {
        let id = node.id();
        let tx = self.db.begin_write()?;
        {
            let mut nodes = tx.open_table(DAG_NODES)?;
            if nodes.get(&id.0)?.is_some() {
                drop(nodes);
                tx.abort()?;
                return Ok(false);
            }
            for p in &node.body.parents {
                if nodes.get(&p.0)?.is_none() {
                    return Err(StoreError::DagMissingParent(*p));
                }
            }
            nodes.insert(&id.0, encode(node).as_slice())?;
            drop(nodes);
            apply_replicated(&tx, &node.body.payload)?;
            let mut heads = tx.open_table(DAG_HEADS)?;
            for p in &node.body.parents {
                heads.remove(&p.0)?;
            }
            heads.insert(&id.0, ())?;
            let mut log = tx.open_table(DAG_LOG)?;
            let seq = log.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
            log.insert(seq, &id.0)?;
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn has_dag_node(&self, id: &Hash32) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(DAG_NODES)?.get(&id.0)?.is_some())
    }

    pub fn dag_heads(&self) -> Result<Vec<Hash32>, StoreError> {
        let tx = self.db.begin_read()?;
        let heads = tx.open_table(DAG_HEADS)?;
        let mut out = Vec::new();
        for entry in heads.iter()? {
            let (k, _) = entry?;
            out.push(Hash32(*k.value()));
        }
        Ok(out)
    }

    pub fn dag_node(&self, id: &Hash32) -> Result<Option<DagNode>, StoreError> {
        let tx = self.db.begin_read()?;
        let nodes = tx.open_table(DAG_NODES)?;
        let v = nodes.get(&id.0)?;
        v.map(|v| decode("dag_nodes", v.value())).transpose()
    }

    pub fn dag_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(DAG_NODES)?.len()?)
    }
}
