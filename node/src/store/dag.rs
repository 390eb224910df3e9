//! DAG tables: every local operation becomes a signed DAG node, appended in the same
//! transaction as the operation itself, so the log and the state never disagree.

use std::sync::Arc;

use onvm_rpc_api::Hash32;
use onvm_rpc_api::dag::{DagNode, DagPayload, MAX_PARENTS, build_node};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use onvm_rpc_api::jobs::JobEvent;
use onvm_rpc_api::program::Writes;

use super::{Store, StoreError, decode, encode};

/// Node id -> postcard DagNode.
const DAG_NODES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("dag_nodes");
/// Current heads (nodes no stored node names as a parent).
const DAG_HEADS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("dag_heads");
/// Arrival order on this node -> node id (a cursor for subscribers and sync).
const DAG_LOG: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("dag_log");
/// Author -> postcard `committee::Member`: every node announced in the DAG (with a BLS key
/// whose proof of possession verified), the candidates for committees.
const DAG_ANNOUNCED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("dag_announced");
/// Author -> the ticket it announced (how a restarted node finds its network again).
const DAG_TICKETS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("dag_tickets");
/// Node id -> why its payload was refused. The node itself is stored like any other (it is
/// validly signed, so the DAG converges and its author's later nodes are never orphaned); only
/// its effect on this node's tables is withheld.
const DAG_REFUSED: TableDefinition<&[u8; 32], &str> = TableDefinition::new("dag_refused");
/// program ‖ u64be(height) ‖ node id -> postcard `ReplicatedCall`: committed calls stored in
/// the DAG before this replica can apply them (the program or an earlier height has not arrived
/// yet); applied as soon as the program reaches that height.
const DAG_DEFERRED: TableDefinition<&[u8; 72], &[u8]> = TableDefinition::new("dag_deferred");
/// Most replicated calls that may wait in `DAG_DEFERRED`. Honest waits are short (a height
/// sequenced by another member arrives a moment before its predecessor) and few; the bound
/// keeps a peer inventing calls for programs nobody deployed from filling the disk.
const MAX_DEFERRED_CALLS: u64 = 4096;
/// `own_last` -> the id of the last node this node authored.
const DAG_META: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("dag_meta");
const OWN_LAST: &str = "own_last";

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
    tx.open_table(DAG_META)?;
    tx.open_table(DAG_ANNOUNCED)?;
    tx.open_table(DAG_TICKETS)?;
    tx.open_table(DAG_REFUSED)?;
    tx.open_table(DAG_DEFERRED)?;
    Ok(())
}

fn deferred_key(program: &onvm_rpc_api::ProgramId, height: u64, node: &Hash32) -> [u8; 72] {
    let mut key = [0u8; 72];
    key[..32].copy_from_slice(program.as_bytes());
    key[32..40].copy_from_slice(&height.to_be_bytes());
    key[40..].copy_from_slice(&node.0);
    key
}

/// Records an announced node as a committee candidate (validation checked its proof of
/// possession).
fn note_announcement(tx: &WriteTransaction, node: &DagNode) -> Result<(), StoreError> {
    if let DagPayload::NodeAnnounce {
        bls_public_key,
        proof_of_possession,
        ticket,
    } = &node.body.payload
    {
        tx.open_table(DAG_TICKETS)?
            .insert(&node.body.author.0, ticket.as_str())?;
        let member = onvm_rpc_api::committee::Member {
            endpoint_id: node.body.author,
            bls_public_key: bls_public_key.clone(),
            proof_of_possession: proof_of_possession.clone(),
        };
        tx.open_table(DAG_ANNOUNCED)?
            .insert(&node.body.author.0, encode(&member).as_slice())?;
    }
    Ok(())
}

/// Appends a node for `payload` on top of the current heads (at most `MAX_PARENTS` of them;
/// any others stay heads and are picked up by the next node). The author's own previous node
/// is always a parent, so each author's nodes form a chain: replicas see a program's calls in
/// height order and a job's changes in the order they happened. No author set: nothing
/// recorded.
///
/// Cost: a few reads of the heads and the node's own last id, whatever the DAG's size. Only a
/// deploy, which needs its ancestry, goes through [`append_with`].
pub(super) fn append(
    tx: &WriteTransaction,
    author: Option<&DagAuthor>,
    payload: DagPayload,
) -> Result<Option<Hash32>, StoreError> {
    let Some(author) = author else {
        return Ok(None);
    };
    let parents = next_parents(tx)?;
    Ok(Some(write_own_node(tx, author, &parents, payload)?))
}

/// The parents of this node's next DAG node: its own previous node and up to `MAX_PARENTS`
/// heads in all.
fn next_parents(tx: &WriteTransaction) -> Result<Vec<Hash32>, StoreError> {
    let heads = tx.open_table(DAG_HEADS)?;
    let meta = tx.open_table(DAG_META)?;
    let mut parents = Vec::new();
    if let Some(own) = meta.get(OWN_LAST)? {
        parents.push(Hash32(*own.value()));
    }
    for entry in heads.iter()? {
        if parents.len() >= MAX_PARENTS {
            break;
        }
        let head = Hash32(*entry?.0.value());
        if !parents.contains(&head) {
            parents.push(head);
        }
    }
    Ok(parents)
}

/// What a deploy's committee is chosen from, derived from the DAG below the deploy node's
/// parents only, so the deploying node and every replica compute the same thing.
#[derive(Debug, Clone, Default)]
pub struct DeployContext {
    /// How many programs the deployer deployed among those ancestors.
    pub deploy_nonce: u64,
    /// Every node announced among those ancestors, by endpoint id.
    pub candidates: Vec<onvm_rpc_api::committee::Member>,
}

/// Walks every ancestor of `parents` (all stored: a node is stored only after its parents).
/// Cost: one read per ancestor; deploys are rare, and the walk is what makes the candidate
/// set a fact of the DAG rather than the deployer's word.
fn deploy_context(
    tx: &WriteTransaction,
    deployer: &Hash32,
    parents: &[Hash32],
) -> Result<DeployContext, StoreError> {
    let nodes = tx.open_table(DAG_NODES)?;
    let mut seen: std::collections::HashSet<Hash32> = parents.iter().copied().collect();
    // The same walk on every node (a DAG node's parents are sorted; sort the deployer's too):
    // if an author announced itself twice, every node keeps the same announcement.
    let mut stack: Vec<Hash32> = parents.to_vec();
    stack.sort();
    stack.dedup();
    let mut context = DeployContext::default();
    let mut announced = std::collections::BTreeMap::new();
    while let Some(id) = stack.pop() {
        let Some(bytes) = nodes.get(&id.0)? else {
            return Err(StoreError::DagMissingParent(id));
        };
        let node: DagNode = decode("dag_nodes", bytes.value())?;
        match &node.body.payload {
            DagPayload::NodeAnnounce {
                bls_public_key,
                proof_of_possession,
                ..
            } => {
                announced.insert(
                    node.body.author,
                    onvm_rpc_api::committee::Member {
                        endpoint_id: node.body.author,
                        bls_public_key: bls_public_key.clone(),
                        proof_of_possession: proof_of_possession.clone(),
                    },
                );
            }
            DagPayload::ProgramDeployed { .. } if node.body.author == *deployer => {
                context.deploy_nonce += 1;
            }
            _ => {}
        }
        for p in &node.body.parents {
            if seen.insert(*p) {
                stack.push(*p);
            }
        }
    }
    context.candidates = announced.into_values().collect();
    Ok(context)
}

/// [`append`] for a payload that depends on the node's own ancestry (a deploy's committee):
/// `payload` gets the deploy context of the parents the node will have. This walks the whole
/// DAG below those parents, so it is for deploys only, never for every operation.
pub(super) fn append_with<E: From<StoreError>>(
    tx: &WriteTransaction,
    author: Option<&DagAuthor>,
    payload: impl FnOnce(&DeployContext) -> Result<DagPayload, E>,
) -> Result<Option<Hash32>, E> {
    let Some(author) = author else {
        payload(&DeployContext::default())?;
        return Ok(None);
    };
    let parents = next_parents(tx)?;
    let context = deploy_context(tx, &author.author, &parents)?;
    let payload = payload(&context)?;
    Ok(Some(write_own_node(tx, author, &parents, payload)?))
}

/// Signs and stores this node's own DAG node on `parents`, as the new head and `own_last`.
fn write_own_node(
    tx: &WriteTransaction,
    author: &DagAuthor,
    parents: &[Hash32],
    payload: DagPayload,
) -> Result<Hash32, StoreError> {
    let mut heads = tx.open_table(DAG_HEADS)?;
    let mut meta = tx.open_table(DAG_META)?;
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
    note_announcement(tx, &node)?;
    for p in parents {
        heads.remove(&p.0)?;
    }
    heads.insert(&id.0, ())?;
    meta.insert(OWN_LAST, &id.0)?;
    let mut log = tx.open_table(DAG_LOG)?;
    let seq = log.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
    log.insert(seq, &id.0)?;
    Ok(id)
}

/// Applies what a peer's operation means for this node's tables, in the transaction that
/// stores the DAG node: programs join the catalog; a committed call's receipt is stored and
/// its `writes` (already fetched and checked against the receipt's digest) are applied, in
/// height order, after checking the call continues from this replica's root and ends at the
/// root the receipt claims.
fn apply_replicated(
    tx: &WriteTransaction,
    node: &DagNode,
    call: Option<&ReplicatedCall>,
) -> Result<Applied, StoreError> {
    let (author, payload) = (&node.body.author, &node.body.payload);
    match payload {
        DagPayload::ProgramDeployed { manifest } => {
            let id = manifest.manifest.program_id;
            // The committee must follow the public rule over the nodes announced below the
            // deploy, recomputed here from the DAG: the deployer can neither hand-pick it nor
            // leave candidates out.
            let context = deploy_context(tx, author, &node.body.parents)?;
            onvm_rpc_api::committee::check_rule(
                &manifest.manifest,
                context.deploy_nonce,
                &context.candidates,
            )
            .map_err(|e| StoreError::ReplicaRejected(format!("deploy of {id}: {e}")))?;
            let mut programs = tx.open_table(super::PROGRAMS)?;
            if let Some(existing) = programs.get(id.as_bytes())? {
                let existing: super::ProgramRecord = decode("programs", existing.value())?;
                if existing.manifest.manifest != manifest.manifest {
                    // Program ids bind the deployer, so only a deployer that signed two
                    // manifests for one id gets here: the first one seen stays.
                    return Err(StoreError::ReplicaRejected(format!(
                        "program {id} is already deployed with a different manifest"
                    )));
                }
            } else {
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
            let r = &receipt.receipt;
            let refuse =
                |why: String| StoreError::ReplicaRejected(format!("{}: {why}", receipt.id));
            let mut record = {
                let programs = tx.open_table(super::PROGRAMS)?;
                match super::require_program(&programs, &r.program_id) {
                    Ok(record) => record,
                    Err(StoreError::UnknownProgram(_)) => {
                        return Ok(Applied::Deferred {
                            program: r.program_id,
                            height: r.height,
                        });
                    }
                    Err(e) => return Err(e),
                }
            };
            // The home, or (failover, committees only) another member; the attestation was
            // checked against the committee before this transaction began.
            let m = &record.manifest.manifest;
            let allowed = if m.committee.len() > 1 {
                m.committee.iter().any(|c| c.endpoint_id == r.executor)
            } else {
                r.executor == m.deployer
            };
            if !allowed {
                return Err(refuse(format!(
                    "executed by {}, which may not sequence this program (home {})",
                    r.executor, m.deployer
                )));
            }
            if r.height < record.height {
                // Already applied (a node reached through two peers at once, or the same
                // call committed by another member's node); a different receipt at an applied
                // height is a fork, refused.
                let key = super::receipt_key(&r.program_id, r.height);
                return match super::receipt_id_at(tx, &key)? {
                    Some(applied) if applied != receipt.id => Err(refuse(format!(
                        "height {} already holds receipt {applied}",
                        r.height
                    ))),
                    _ => Ok(Applied::Done(None)),
                };
            }
            if r.height > record.height {
                // An earlier height has not arrived yet (calls sequenced by different members
                // travel in different authors' chains): applied once it has.
                return Ok(Applied::Deferred {
                    program: r.program_id,
                    height: r.height,
                });
            }
            if r.state_root_in != record.state_root {
                return Err(refuse(format!(
                    "starts from root {}, this replica is at {}",
                    r.state_root_in, record.state_root
                )));
            }
            if let Some(at) = super::call_height(tx, &r.program_id, &r.call_id)? {
                return Err(refuse(format!(
                    "call {} was already committed at height {at}",
                    r.call_id
                )));
            }
            let call = call.ok_or_else(|| refuse("its writes were not supplied".into()))?;
            if Hash32::of(&call.input) != r.input_hash {
                return Err(refuse("its input does not match input_hash".into()));
            }
            if Hash32::of(&call.output) != r.output_hash {
                return Err(refuse("its output does not match output_hash".into()));
            }
            let root = super::apply_writes(tx, &r.program_id, &mut record, &call.writes)?;
            if root != r.state_root_out {
                return Err(refuse(format!(
                    "its writes lead to root {root}, the receipt claims {}",
                    r.state_root_out
                )));
            }
            record.height = r.height + 1;
            record.last_timestamp_ms = record.last_timestamp_ms.max(r.timestamp_ms);
            tx.open_table(super::PROGRAMS)?
                .insert(r.program_id.as_bytes(), encode(&record).as_slice())?;
            let key = super::receipt_key(&r.program_id, r.height);
            super::record_call(tx, &key, receipt, &call.input, &call.output)?;
        }
        DagPayload::JobSubmitted { .. } | DagPayload::JobStateChanged { .. } => {
            return super::jobs::apply_replicated(tx, author, payload).map(Applied::Done);
        }
        DagPayload::NodeAnnounce { .. } | DagPayload::BlobPublished { .. } => {}
    }
    Ok(Applied::Done(None))
}

/// What a peer's payload did to this node's tables.
enum Applied {
    /// Another delivery of the same node stored it first; nothing was done.
    AlreadyStored,
    /// Applied (or already applied), with the job event it caused.
    Done(Option<JobEvent>),
    /// A committed call that cannot apply yet: its program or an earlier height is missing.
    Deferred {
        program: onvm_rpc_api::ProgramId,
        height: u64,
    },
}

/// Stores a peer's node as a head and in the arrival log; its parents must be stored. False
/// if it is already stored (checked inside `tx`: gossip and sync may deliver one node at once).
fn insert_node(tx: &WriteTransaction, node: &DagNode, id: &Hash32) -> Result<bool, StoreError> {
    let mut nodes = tx.open_table(DAG_NODES)?;
    if nodes.get(&id.0)?.is_some() {
        return Ok(false);
    }
    for p in &node.body.parents {
        if nodes.get(&p.0)?.is_none() {
            return Err(StoreError::DagMissingParent(*p));
        }
    }
    nodes.insert(&id.0, encode(node).as_slice())?;
    drop(nodes);
    note_announcement(tx, node)?;
    let mut heads = tx.open_table(DAG_HEADS)?;
    for p in &node.body.parents {
        heads.remove(&p.0)?;
    }
    heads.insert(&id.0, ())?;
    let mut log = tx.open_table(DAG_LOG)?;
    let seq = log.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
    log.insert(seq, &id.0)?;
    Ok(true)
}

/// A replicated call's writes and input, fetched and checked against its receipt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReplicatedCall {
    pub writes: Writes,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

/// What storing a peer's node did.
#[derive(Debug, Default)]
pub struct ForeignInsert {
    /// False if the node was already stored.
    pub new: bool,
    /// The job event it caused, for live subscribers.
    pub job_event: Option<JobEvent>,
    /// Why its payload was refused (the node is stored all the same).
    pub refused: Option<String>,
    /// Its payload waits for an earlier height or for its program.
    pub deferred: bool,
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
        let tx = self.begin_write()?;
        let id = append(&tx, self.author(), payload)?;
        self.commit_dag(tx)?;
        Ok(id)
    }

    /// Stores a node received from a peer (already validated by the caller) whose parents are
    /// all stored, with the decoded writes of an `ExecutionCommitted`, and applies its payload.
    /// A validly signed node is always stored, so every node holding the same nodes has the
    /// same DAG: a payload this node refuses is recorded in `dag_refused` with the reason and
    /// changes nothing else, and a committed call that cannot apply yet waits in
    /// `dag_deferred`. Errors are storage errors and missing parents only.
    pub fn insert_foreign_dag(
        &self,
        node: &DagNode,
        call: Option<&ReplicatedCall>,
    ) -> Result<ForeignInsert, StoreError> {
        let id = node.id();
        if self.has_dag_node(&id)? {
            return Ok(ForeignInsert::default());
        }
        let applied = match &node.body.payload {
            DagPayload::ExecutionCommitted { receipt, .. } => self.check_attestation(receipt),
            _ => Ok(()),
        }
        .and_then(|()| self.insert_and_apply(node, &id, call));
        let (job_event, refused, deferred) = match applied {
            Ok(Applied::AlreadyStored) => return Ok(ForeignInsert::default()),
            Ok(Applied::Done(event)) => (event, None, false),
            Ok(Applied::Deferred { program, height }) => {
                tracing::debug!(node = %id, %program, height, "replicated call deferred");
                (None, None, true)
            }
            Err(StoreError::ReplicaRejected(reason)) => {
                // The failed transaction was dropped with whatever it wrote; store the node
                // alone, with the reason.
                tracing::warn!(node = %id, author = %node.body.author, "payload refused: {reason}");
                self.insert_refused(node, &id, &reason)?;
                (None, Some(reason), false)
            }
            Err(e) => return Err(e),
        };
        if let DagPayload::ExecutionCommitted { receipt, .. } = &node.body.payload {
            self.apply_deferred(&receipt.receipt.program_id)?;
        } else if let DagPayload::ProgramDeployed { manifest } = &node.body.payload {
            self.apply_deferred(&manifest.manifest.program_id)?;
        }
        Ok(ForeignInsert {
            new: true,
            job_event,
            refused,
            deferred,
        })
    }

    /// Stores `node` and applies its payload in one transaction (committed only if the payload
    /// applied or was deferred).
    fn insert_and_apply(
        &self,
        node: &DagNode,
        id: &Hash32,
        call: Option<&ReplicatedCall>,
    ) -> Result<Applied, StoreError> {
        let tx = self.begin_write()?;
        if !insert_node(&tx, node, id)? {
            return Ok(Applied::AlreadyStored);
        }
        let applied = apply_replicated(&tx, node, call)?;
        if let Applied::Deferred { program, height } = &applied {
            let call = call.ok_or_else(|| {
                StoreError::ReplicaRejected(format!("{id}: its writes were not supplied"))
            })?;
            // The attestation of a call for an unknown program cannot be checked yet, so a
            // lying peer could park junk here: bounded, and what is over the bound is refused.
            let mut deferred = tx.open_table(DAG_DEFERRED)?;
            if deferred.len()? >= MAX_DEFERRED_CALLS {
                return Err(StoreError::ReplicaRejected(format!(
                    "{id}: {MAX_DEFERRED_CALLS} replicated calls already wait for earlier heights"
                )));
            }
            deferred.insert(&deferred_key(program, *height, id), encode(call).as_slice())?;
        }
        self.commit_dag(tx)?;
        Ok(applied)
    }

    fn insert_refused(&self, node: &DagNode, id: &Hash32, reason: &str) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        if insert_node(&tx, node, id)? {
            tx.open_table(DAG_REFUSED)?.insert(&id.0, reason)?;
        }
        self.commit_dag(tx)
    }

    /// Applies the deferred calls of `program` that continue from its current height, in
    /// height order, each in its own transaction; one that fails is refused and dropped.
    fn apply_deferred(&self, program: &onvm_rpc_api::ProgramId) -> Result<(), StoreError> {
        loop {
            let Some(record) = self.program(program)? else {
                return Ok(());
            };
            let (start, end) = (
                deferred_key(program, record.height, &Hash32([0; 32])),
                deferred_key(program, record.height, &Hash32([0xff; 32])),
            );
            let next = {
                let tx = self.begin_read()?;
                let table = tx.open_table(DAG_DEFERRED)?;
                let mut range = table.range::<&[u8; 72]>(&start..=&end)?;
                match range.next() {
                    Some(entry) => {
                        let (k, v) = entry?;
                        let call: ReplicatedCall = decode("dag_deferred", v.value())?;
                        Some((*k.value(), call))
                    }
                    None => None,
                }
            };
            let Some((key, call)) = next else {
                return Ok(());
            };
            let mut node_id = [0u8; 32];
            node_id.copy_from_slice(&key[40..]);
            let node_id = Hash32(node_id);
            let node = self
                .dag_node(&node_id)?
                .ok_or(StoreError::DagMissingParent(node_id))?;
            let tx = self.begin_write()?;
            tx.open_table(DAG_DEFERRED)?.remove(&key)?;
            let result = match &node.body.payload {
                DagPayload::ExecutionCommitted { receipt, .. } => self
                    .check_attestation(receipt)
                    .and_then(|()| apply_replicated(&tx, &node, Some(&call))),
                _ => Ok(Applied::Done(None)),
            };
            match result {
                Ok(_) => self.commit_dag(tx)?,
                Err(StoreError::ReplicaRejected(reason)) => {
                    drop(tx);
                    tracing::warn!(node = %node_id, "deferred payload refused: {reason}");
                    let tx = self.begin_write()?;
                    tx.open_table(DAG_DEFERRED)?.remove(&key)?;
                    tx.open_table(DAG_REFUSED)?
                        .insert(&node_id.0, reason.as_str())?;
                    self.commit_dag(tx)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies, for every program with replicated calls waiting, those that continue from its
    /// current height; returns how many applied (or were refused). Run at start: a crash after
    /// a call applied but before the calls waiting for it did leaves them waiting, and nothing
    /// else wakes them while their program stays idle.
    pub fn apply_all_deferred(&self) -> Result<u64, StoreError> {
        let before = self.deferred_calls()?;
        if before == 0 {
            return Ok(0);
        }
        let mut programs = std::collections::BTreeSet::new();
        {
            let tx = self.begin_read()?;
            let table = tx.open_table(DAG_DEFERRED)?;
            for entry in table.iter()? {
                let (k, _) = entry?;
                let mut program = [0u8; 32];
                program.copy_from_slice(&k.value()[..32]);
                programs.insert(program);
            }
        }
        for program in programs {
            self.apply_deferred(&onvm_rpc_api::ProgramId::from_bytes(program))?;
        }
        Ok(before - self.deferred_calls()?)
    }

    /// DAG nodes whose payload this node refused, with the reason (at most `limit`).
    pub fn refused_dag_nodes(&self, limit: usize) -> Result<Vec<(Hash32, String)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(DAG_REFUSED)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(limit) {
            let (k, v) = entry?;
            out.push((Hash32(*k.value()), v.value().to_string()));
        }
        Ok(out)
    }

    /// How many replicated calls wait for an earlier height or their program.
    pub fn deferred_calls(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(DAG_DEFERRED)?.len()?)
    }

    /// A committed call of a program with a committee must carry a threshold of valid member
    /// signatures (a committee of one: the executor's own signature, checked on validation).
    fn check_attestation(
        &self,
        receipt: &onvm_rpc_api::program::SignedReceipt,
    ) -> Result<(), StoreError> {
        let Some(record) = self.program(&receipt.receipt.program_id)? else {
            return Ok(());
        };
        let manifest = &record.manifest.manifest;
        // The caller's signature itself was checked with the node (`verify_receipt`); what only
        // the manifest can say is whether an anonymous call was allowed.
        if manifest.require_signed_calls && receipt.receipt.caller == Hash32::ZERO {
            return Err(StoreError::ReplicaRejected(format!(
                "{}: an anonymous call to a program that requires signed calls",
                receipt.id
            )));
        }
        if manifest.committee.len() <= 1 {
            return Ok(());
        }
        let committee = self.verified_committee(manifest)?;
        let Some(_) = &receipt.attestation else {
            return Err(StoreError::ReplicaRejected(format!(
                "{}: no committee attestation",
                receipt.id
            )));
        };
        committee
            .verify(&receipt.aggregated(), &manifest.network_id)
            .map_err(|e| StoreError::ReplicaRejected(format!("{}: attestation: {e}", receipt.id)))
    }

    pub fn has_dag_node(&self, id: &Hash32) -> Result<bool, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(DAG_NODES)?.get(&id.0)?.is_some())
    }

    pub fn dag_heads(&self) -> Result<Vec<Hash32>, StoreError> {
        let tx = self.begin_read()?;
        let heads = tx.open_table(DAG_HEADS)?;
        let mut out = Vec::new();
        for entry in heads.iter()? {
            let (k, _) = entry?;
            out.push(Hash32(*k.value()));
        }
        Ok(out)
    }

    pub fn dag_node(&self, id: &Hash32) -> Result<Option<DagNode>, StoreError> {
        let tx = self.begin_read()?;
        let nodes = tx.open_table(DAG_NODES)?;
        let v = nodes.get(&id.0)?;
        v.map(|v| decode("dag_nodes", v.value())).transpose()
    }

    /// Nodes in this node's arrival order after `seq` (at most `limit`), with their sequence.
    pub fn dag_log_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, DagNode)>, StoreError> {
        let tx = self.begin_read()?;
        let log = tx.open_table(DAG_LOG)?;
        let nodes = tx.open_table(DAG_NODES)?;
        let mut out = Vec::new();
        for entry in log.range(seq.saturating_add(1)..)?.take(limit) {
            let (k, id) = entry?;
            if let Some(v) = nodes.get(id.value())? {
                out.push((k.value(), decode("dag_nodes", v.value())?));
            }
        }
        Ok(out)
    }

    /// Every node announced in the DAG so far (committee candidates), by endpoint id.
    pub fn announced_members(&self) -> Result<Vec<onvm_rpc_api::committee::Member>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(DAG_ANNOUNCED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(decode("dag_announced", v.value())?);
        }
        Ok(out)
    }

    /// Whether `id` announced itself (with a valid BLS proof of possession) in this node's DAG.
    pub fn is_announced(&self, id: &Hash32) -> Result<bool, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(DAG_ANNOUNCED)?.get(&id.0)?.is_some())
    }

    /// The ticket each announced node published, by endpoint id.
    pub fn announced_tickets(&self) -> Result<Vec<(Hash32, String)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(DAG_TICKETS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((Hash32(*k.value()), v.value().to_string()));
        }
        Ok(out)
    }

    /// The sequence number of the newest node in the arrival log (0 when empty).
    pub fn dag_last_seq(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx
            .open_table(DAG_LOG)?
            .last()?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    pub fn dag_len(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(DAG_NODES)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onvm_rpc_api::dag::SubmittedJob;
    use onvm_rpc_api::{BlobId, JobId, ProgramId};

    fn node_by(
        identity: &crate::identity::Identity,
        parents: Vec<Hash32>,
        payload: DagPayload,
    ) -> DagNode {
        build_node(
            "test",
            Hash32(*identity.endpoint_id().as_bytes()),
            parents,
            1,
            payload,
            |m| identity.ed25519_sign(m),
        )
    }

    #[test]
    fn a_refused_payload_is_stored_and_never_orphans_its_authors_later_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let author = crate::identity::Identity::generate();
        // A job for a program nobody deployed: refused on apply.
        let bad = node_by(
            &author,
            vec![],
            DagPayload::JobSubmitted {
                job: Box::new(SubmittedJob {
                    job_id: JobId::from_bytes([1; 32]),
                    program_id: ProgramId::from_bytes([2; 32]),
                    request_id: "r".into(),
                    input_blob: BlobId::from_bytes([3; 32]),
                    input_hash: Hash32([3; 32]),
                    input_size: 0,
                    entrypoint: None,
                    max_retries: 0,
                    timeout_ms: 1,
                    fuel: 1,
                    metadata_json: None,
                    created_at_ms: 1,
                    signed: None,
                }),
            },
        );
        let inserted = store.insert_foreign_dag(&bad, None).unwrap();
        assert!(inserted.new);
        let reason = inserted.refused.expect("the payload is refused");
        assert!(reason.contains("not deployed"), "{reason}");
        // The author's next node names the refused one as its parent and still applies.
        let next = node_by(
            &author,
            vec![bad.id()],
            DagPayload::BlobPublished {
                blob: BlobId::from_bytes([4; 32]),
                size: 1,
                mime: None,
            },
        );
        let inserted = store.insert_foreign_dag(&next, None).unwrap();
        assert!(inserted.new && inserted.refused.is_none());
        assert_eq!(store.dag_heads().unwrap(), vec![next.id()]);
        assert_eq!(store.dag_len().unwrap(), 2);
        let refused = store.refused_dag_nodes(16).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, bad.id());
        // The refusal changed nothing else: no job record exists.
        assert!(store.job(&JobId::from_bytes([1; 32])).unwrap().is_none());
        // Storing it again is a no-op.
        assert!(!store.insert_foreign_dag(&bad, None).unwrap().new);
    }

    fn announce(identity: &crate::identity::Identity) -> DagNode {
        node_by(
            identity,
            vec![],
            DagPayload::NodeAnnounce {
                bls_public_key: onvm_rpc_api::HexBytes(identity.bls_public_key().to_vec()),
                proof_of_possession: onvm_rpc_api::HexBytes(
                    identity.bls_proof_of_possession().to_vec(),
                ),
                ticket: String::new(),
            },
        )
    }

    fn member(identity: &crate::identity::Identity) -> onvm_rpc_api::committee::Member {
        onvm_rpc_api::committee::Member {
            endpoint_id: Hash32(*identity.endpoint_id().as_bytes()),
            bls_public_key: onvm_rpc_api::HexBytes(identity.bls_public_key().to_vec()),
            proof_of_possession: onvm_rpc_api::HexBytes(
                identity.bls_proof_of_possession().to_vec(),
            ),
        }
    }

    /// A deploy by `deployer` on top of `parents` with the given committee and candidates.
    fn deploy(
        deployer: &crate::identity::Identity,
        parents: Vec<Hash32>,
        salt: &str,
        committee: Vec<onvm_rpc_api::committee::Member>,
        candidates: Vec<Hash32>,
    ) -> DagNode {
        let me = Hash32(*deployer.endpoint_id().as_bytes());
        let code = BlobId::from_bytes([9; 32]);
        let manifest = onvm_rpc_api::program::ProgramManifest {
            version: 1,
            network_id: "test".into(),
            program_id: onvm_rpc_api::program::program_id(&me, &code, salt),
            code,
            code_size: 0,
            salt: salt.into(),
            entrypoints: vec!["onvm_main".into()],
            blob_refs: vec![],
            abi_version: 1,
            engine: "test".into(),
            initial_state_root: Hash32::ZERO,
            deployer: me,
            deployed_at_ms: 1,
            threshold: committee.len() as u32,
            committee,
            deploy_nonce: 0,
            candidates,
            require_signed_calls: false,
        };
        let signature =
            onvm_rpc_api::HexBytes(deployer.ed25519_sign(&manifest.signing_message()).to_vec());
        node_by(
            deployer,
            parents,
            DagPayload::ProgramDeployed {
                manifest: Box::new(onvm_rpc_api::program::SignedManifest {
                    manifest,
                    signature,
                }),
            },
        )
    }

    #[test]
    fn replicas_refuse_a_committee_that_does_not_follow_the_rule_over_the_dag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let ids: Vec<crate::identity::Identity> = (0..5)
            .map(|_| crate::identity::Identity::generate())
            .collect();
        let announcements: Vec<DagNode> = ids.iter().map(announce).collect();
        for a in &announcements {
            assert!(store.insert_foreign_dag(a, None).unwrap().refused.is_none());
        }
        let parents: Vec<Hash32> = announcements.iter().map(DagNode::id).collect();
        let all: Vec<onvm_rpc_api::committee::Member> = ids.iter().map(member).collect();
        let mut candidate_ids: Vec<Hash32> = all.iter().map(|m| m.endpoint_id).collect();
        candidate_ids.sort();
        let rule = onvm_rpc_api::committee::select(&all[0], 0, &all, 3);

        // The deployer hand-picks members the rule did not choose.
        let picked: Vec<_> = std::iter::once(all[0].clone())
            .chain(
                all[1..]
                    .iter()
                    .filter(|m| !rule.contains(m))
                    .take(2)
                    .cloned(),
            )
            .collect();
        let bad = deploy(
            &ids[0],
            parents.clone(),
            "picked",
            picked,
            candidate_ids.clone(),
        );
        let reason = store.insert_foreign_dag(&bad, None).unwrap().refused;
        assert!(
            reason.as_deref().is_some_and(|r| r.contains("select")),
            "{reason:?}"
        );

        // Or leaves candidates out of the recorded set.
        let few = deploy(
            &ids[0],
            parents.clone(),
            "few",
            rule.clone(),
            candidate_ids[..3].to_vec(),
        );
        let reason = store.insert_foreign_dag(&few, None).unwrap().refused;
        assert!(
            reason.as_deref().is_some_and(|r| r.contains("candidates")),
            "{reason:?}"
        );

        // The rule's own committee over every announced node is accepted.
        let good = deploy(&ids[0], parents, "good", rule, candidate_ids);
        let inserted = store.insert_foreign_dag(&good, None).unwrap();
        assert!(inserted.refused.is_none(), "{:?}", inserted.refused);
        let DagPayload::ProgramDeployed { manifest } = &good.body.payload else {
            unreachable!()
        };
        assert!(
            store
                .program(&manifest.manifest.program_id)
                .unwrap()
                .is_some()
        );
        assert_eq!(store.refused_dag_nodes(16).unwrap().len(), 2);
    }

    /// A committed call of `program` at `height` on the empty state, executed by `executor`.
    fn committed(
        program: onvm_rpc_api::ProgramId,
        executor: Hash32,
        height: u64,
    ) -> (DagPayload, ReplicatedCall) {
        use onvm_rpc_api::program::{ExecutionReceipt, Outcome, SignedReceipt};
        let input = format!("call {height}").into_bytes();
        let r = ExecutionReceipt {
            version: 2,
            network_id: "test".into(),
            program_id: program,
            code_hash: BlobId::from_bytes([9; 32]),
            engine: "test".into(),
            entrypoint: "onvm_main".into(),
            height,
            input_hash: Hash32::of(&input),
            caller: Hash32::ZERO,
            call_id: Hash32::of(&input),
            caller_proof: None,
            timestamp_ms: 0,
            seed: Hash32::ZERO,
            state_root_in: Hash32::ZERO,
            state_root_out: Hash32::ZERO,
            write_digest: Hash32::ZERO,
            output_hash: Hash32::of(b""),
            output_len: 0,
            fuel_limit: 1,
            fuel_used: 1,
            outcome: Outcome::Ok,
            executor,
        };
        let receipt = SignedReceipt {
            id: r.id(),
            receipt: r,
            signer_bls_key: onvm_rpc_api::HexBytes(vec![]),
            signature: onvm_rpc_api::HexBytes(vec![]),
            attestation: None,
        };
        let inline =
            |b: &[u8]| onvm_rpc_api::dag::DataRef::Inline(onvm_rpc_api::HexBytes(b.to_vec()));
        let payload = DagPayload::ExecutionCommitted {
            receipt: Box::new(receipt),
            writes: inline(&onvm_rpc_api::program::encode_writes(&Writes::new())),
            input: inline(&input),
            output: inline(b""),
        };
        let call = ReplicatedCall {
            writes: Writes::new(),
            input,
            output: Vec::new(),
        };
        (payload, call)
    }

    /// A deploy and its first call, where the call reached this store first (through another
    /// node's chain): the call is stored and waits for its program.
    struct EarlyCall {
        deployer: crate::identity::Identity,
        relay: crate::identity::Identity,
        d: Hash32,
        good: DagNode,
        early: DagNode,
        program: onvm_rpc_api::ProgramId,
    }

    fn call_before_its_deploy(store: &Store) -> EarlyCall {
        let deployer = crate::identity::Identity::generate();
        let relay = crate::identity::Identity::generate();
        let d = Hash32(*deployer.endpoint_id().as_bytes());
        let (a_d, a_r) = (announce(&deployer), announce(&relay));
        // The relay's chain carries the deployer's first call before the deploy reached us.
        let good = deploy(
            &deployer,
            vec![a_d.id()],
            "s",
            vec![member(&deployer)],
            vec![d],
        );
        let DagPayload::ProgramDeployed { manifest } = &good.body.payload else {
            unreachable!()
        };
        let program = manifest.manifest.program_id;
        let (payload0, call0) = committed(program, d, 0);
        let early = node_by(&relay, vec![a_r.id()], payload0);
        for n in [&a_d, &a_r] {
            store.insert_foreign_dag(n, None).unwrap();
        }
        let inserted = store.insert_foreign_dag(&early, Some(&call0)).unwrap();
        assert!(inserted.new && inserted.deferred && inserted.refused.is_none());
        assert_eq!(store.deferred_calls().unwrap(), 1);
        EarlyCall {
            deployer,
            relay,
            d,
            good,
            early,
            program,
        }
    }

    #[test]
    fn a_call_that_arrives_before_its_program_waits_and_then_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let EarlyCall {
            deployer,
            relay,
            d,
            good,
            early,
            program,
        } = call_before_its_deploy(&store);
        assert!(store.program(&program).unwrap().is_none());
        // The deploy arrives: the waiting call applies at height 0, once.
        assert!(
            store
                .insert_foreign_dag(&good, None)
                .unwrap()
                .refused
                .is_none()
        );
        assert_eq!(store.deferred_calls().unwrap(), 0);
        assert_eq!(store.program(&program).unwrap().unwrap().height, 1);
        // Height 1 in the deployer's own chain applies normally; a second receipt for an
        // applied height is refused, the node kept.
        let (payload1, call1) = committed(program, d, 1);
        let next = node_by(&deployer, vec![good.id()], payload1);
        assert!(
            store
                .insert_foreign_dag(&next, Some(&call1))
                .unwrap()
                .refused
                .is_none()
        );
        assert_eq!(store.program(&program).unwrap().unwrap().height, 2);
        let (mut fork, fork_call) = committed(program, d, 1);
        if let DagPayload::ExecutionCommitted { receipt, .. } = &mut fork {
            receipt.receipt.timestamp_ms = 7;
            receipt.id = receipt.receipt.id();
        }
        let forked = node_by(&relay, vec![early.id()], fork);
        let reason = store
            .insert_foreign_dag(&forked, Some(&fork_call))
            .unwrap()
            .refused;
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("already holds")),
            "{reason:?}"
        );
        assert_eq!(store.program(&program).unwrap().unwrap().height, 2);
    }

    #[test]
    fn calls_left_waiting_by_a_crash_apply_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let store = Store::open(&path).unwrap();
        let EarlyCall { good, program, .. } = call_before_its_deploy(&store);
        // The deploy applies in its own transaction, and the process dies before the sweep of
        // the calls that waited for it (insert_and_apply is the first half of
        // insert_foreign_dag).
        store.insert_and_apply(&good, &good.id(), None).unwrap();
        assert_eq!(store.deferred_calls().unwrap(), 1);
        assert_eq!(store.program(&program).unwrap().unwrap().height, 0);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.apply_all_deferred().unwrap(), 1);
        assert_eq!(store.deferred_calls().unwrap(), 0);
        assert_eq!(store.program(&program).unwrap().unwrap().height, 1);
        // Nothing waits: a second sweep does nothing.
        assert_eq!(store.apply_all_deferred().unwrap(), 0);
    }
}
