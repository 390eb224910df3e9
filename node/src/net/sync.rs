//! DAG pull sync over the peer protocol: heads, then unknown nodes parents first, validated
//! before anything is stored; the blobs and call data a node needs; finding a blob's holder.
//! Gossip pushes; this repairs what gossip missed.

use super::Peers;
use super::peers::{DIAL_TIMEOUT, request};
use super::wire::{PEER_ALPN, PeerRequest, PeerResponse};

/// Dial timeout of a sync round (rounds repeat, so a slow peer is simply tried again).
const SYNC_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most DAG nodes a sync round fetches one by one, walking back from the peer's heads: gaps
/// that gossip left are small. A larger gap (a node joining a long history, or back from a
/// long absence) is pulled as ranges of the peer's log instead ([`Peers::sync_log`]).
const MAX_WALK_NODES: usize = 512;
/// Most DAG nodes pulled as log ranges from one peer in one sync round (the next round goes
/// on from where this one stopped).
const MAX_RANGE_NODES: usize = 50_000;

impl Peers {
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
        if wanted.is_empty() {
            return Ok(0);
        }
        let mut fetched: std::collections::HashMap<
            onvm_rpc_api::Hash32,
            onvm_rpc_api::dag::DagNode,
        > = std::collections::HashMap::new();
        while let Some(want) = wanted.pop() {
            if fetched.contains_key(&want) {
                continue;
            }
            if fetched.len() >= MAX_WALK_NODES {
                // Too far behind to walk back node by node: pull the peer's log in ranges.
                return self.sync_log(&conn, &addr).await;
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

    /// Pulls the peer's DAG log in ranges from where the last range pull from it stopped
    /// (its start the first time): each reply is a batch of nodes in the peer's arrival order,
    /// which is parents first, validated and then stored in that order. Nodes this node holds
    /// already are skipped. Stops at the log's end or after [`MAX_RANGE_NODES`].
    async fn sync_log(
        &self,
        conn: &iroh::endpoint::Connection,
        addr: &iroh::EndpointAddr,
    ) -> Result<usize, String> {
        let id = addr.id;
        let mut cursor = self.log_cursor(&id);
        let mut added = 0;
        let mut pulled = 0;
        let mut restarted = false;
        while pulled < MAX_RANGE_NODES {
            let request_batch = PeerRequest::DagLogAfter {
                after_seq: cursor,
                limit: super::wire::MAX_DAG_LOG_BATCH,
            };
            let batch = match request(conn, &request_batch).await? {
                PeerResponse::DagLog { nodes } => nodes,
                other => return Err(format!("unexpected reply {other:?}")),
            };
            let Some(last) = batch.last().map(|(seq, _)| *seq) else {
                if cursor > 0 && added == 0 && !restarted {
                    // The peer's log ends before our cursor (its database was replaced): read
                    // it again from the start.
                    restarted = true;
                    cursor = 0;
                    continue;
                }
                break;
            };
            if last <= cursor {
                let msg = format!("DAG log positions go backwards ({last} after {cursor})");
                self.penalise(&id, msg.clone());
                return Err(msg);
            }
            pulled += batch.len();
            let mut nodes = std::collections::HashMap::new();
            let mut order = Vec::with_capacity(batch.len());
            for (_, bytes) in batch {
                let node: onvm_rpc_api::dag::DagNode =
                    postcard::from_bytes(&bytes).map_err(|e| format!("malformed DAG node: {e}"))?;
                let nid = node.validate_alone(&self.network_id).map_err(|e| {
                    let msg = format!("invalid DAG node in the log: {e}");
                    self.penalise(&id, msg.clone());
                    msg
                })?;
                order.push(nid);
                nodes.insert(nid, node);
            }
            let store = self.store.clone();
            let known = tokio::task::spawn_blocking(move || {
                order
                    .into_iter()
                    .filter(|n| store.has_dag_node(n).unwrap_or(false))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| e.to_string())?;
            for k in known {
                nodes.remove(&k);
            }
            added += self.ingest(addr, nodes).await?;
            cursor = last;
            self.set_log_cursor(id, cursor);
        }
        Ok(added)
    }

    fn log_cursor(&self, peer: &iroh::EndpointId) -> u64 {
        self.log_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .copied()
            .unwrap_or(0)
    }

    fn set_log_cursor(&self, peer: iroh::EndpointId, seq: u64) {
        self.log_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, seq);
    }

    /// Stores validated nodes from peer `from`, parents first (their deterministic order), with
    /// the writes of committed calls fetched from that peer when they travel as blobs. Stops at
    /// the first node that cannot be stored; what came before it stays.
    pub(super) async fn ingest(
        &self,
        from: &iroh::EndpointAddr,
        mut nodes: std::collections::HashMap<onvm_rpc_api::Hash32, onvm_rpc_api::dag::DagNode>,
    ) -> Result<usize, String> {
        let graph: std::collections::BTreeMap<_, _> = nodes
            .iter()
            .map(|(k, n)| (*k, n.body.parents.clone()))
            .collect();
        // The data each node needs (fetched from the peer when it travels as blobs), then
        // every node stored in one blocking task with one fsync for the batch.
        let mut batch = Vec::with_capacity(nodes.len());
        for nid in onvm_rpc_api::dag::order(&graph) {
            let Some(node) = nodes.remove(&nid) else {
                continue;
            };
            let call = self.resolve_call(&node, from).await?;
            batch.push((nid, node, call));
        }
        let store = self.store.clone();
        let results = tokio::task::spawn_blocking(move || {
            store.with_batched_dag_commits(|| {
                let mut results = Vec::with_capacity(batch.len());
                for (nid, node, call) in batch {
                    let author = node.body.author;
                    let inserted = store.insert_foreign_dag(&node, call.as_ref());
                    let stop = inserted.is_err();
                    results.push((nid, author, inserted));
                    if stop {
                        // Nodes after a failed one may depend on it: the next round retries.
                        break;
                    }
                }
                results
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("storing DAG nodes from {}: {e}", from.id))?;
        let mut added = 0;
        let mut failed = None;
        for (nid, node_author, inserted) in results {
            match inserted {
                Ok(inserted) => {
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
                Err(e) => failed = Some(format!("DAG node {nid} from {}: {e}", from.id)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(added)
    }

    /// Blobs a node must hold before it stores `node`: a program's code and declared blobs (so
    /// it can run read-only calls), and a committed call's writes, input and output when they
    /// travel as blobs.
    pub(super) fn required_blobs(node: &onvm_rpc_api::dag::DagNode) -> Vec<onvm_rpc_api::BlobId> {
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
    pub(super) async fn resolve_call(
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
    pub(super) async fn data_bytes(
        &self,
        data: &onvm_rpc_api::dag::DataRef,
    ) -> Result<Vec<u8>, String> {
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
}
