//! The JSON-RPC server: implements the `rpc-api` traits on top of the node's services, applies
//! the configured limits, and is the one place that maps module errors to JSON-RPC codes.

use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;

use crate::net::{CallHandler, ForwardedCall, ForwardedReply};
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use onvm_rpc_api::api::{
    BlobApiServer, DagApiServer, JobApiServer, NodeApiServer, PeerApiServer, ProgramApiServer,
    ReceiptApiServer, StateApiServer, TokenApiServer,
};
use onvm_rpc_api::auth::{CreatedToken, TokenInfo, TokenRequest};
use onvm_rpc_api::error::{self as codes, rpc_error};
use onvm_rpc_api::jobs::{
    JobEvent, JobFilter, JobInfo, JobLogs, JobOutput, JobPage, JobStreamItem, SubmitJob,
    SubmitResult,
};
use onvm_rpc_api::program::{
    DeployRequest, DeployResult, ExecuteOptions, ExecuteResult, ProgramInfo, ProgramPage,
    ReceiptPage, SignedReceipt, StateProof, StateRoot, StateValue,
};
use onvm_rpc_api::types::PeerInfo;
use onvm_rpc_api::types::{
    Base64Bytes, BlobChunk, BlobPage, BlobStat, Health, Metrics, NodeInfo, UploadStatus,
};
use onvm_rpc_api::{BlobId, UploadId};
use onvm_rpc_api::{JobId, ProgramId, ReceiptId};
use serde_json::json;

use crate::blobs::BlobError;
use crate::config::RpcConfig;
use crate::jobs::{JobError, Jobs};
use crate::node::NodeContext;
use crate::programs::ProgramError;

pub mod auth;
pub mod cookie;
pub mod limits;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot serve RPC on {addr}: {cause}{}", bind_hint(cause))]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("registering RPC methods: {0}")]
    Register(String),
}

fn bind_hint(cause: &std::io::Error) -> &'static str {
    match cause.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process, perhaps another onvm node, holds this port: `ss -ltnp` shows which; choose another with --rpc :PORT, and give a second node its own --data-dir)"
        }
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

/// Maps a blob error to its stable code, message and `data.kind`.
fn blob_error(e: BlobError) -> ErrorObjectOwned {
    let msg = e.to_string();
    match e {
        BlobError::NotFound(id) => {
            rpc_error(codes::NOT_FOUND, "blob_not_found", msg, json!({"id": id}))
        }
        BlobError::UploadNotFound(id) => rpc_error(
            codes::NOT_FOUND,
            "upload_not_found",
            msg,
            json!({"upload_id": id}),
        ),
        BlobError::TooLarge { size, max } => rpc_error(
            codes::LIMIT_EXCEEDED,
            "blob_too_large",
            msg,
            json!({"size": size, "max": max}),
        ),
        BlobError::InlineTooLarge { size, max } => rpc_error(
            codes::LIMIT_EXCEEDED,
            "inline_too_large",
            msg,
            json!({"size": size, "max": max}),
        ),
        BlobError::ChunkTooLarge { len, max } => rpc_error(
            codes::LIMIT_EXCEEDED,
            "chunk_too_large",
            msg,
            json!({"len": len, "max": max}),
        ),
        BlobError::RangeTooLarge { len, max, size } => rpc_error(
            codes::LIMIT_EXCEEDED,
            "range_too_large",
            msg,
            json!({"len": len, "max": max, "size": size}),
        ),
        BlobError::OffsetOutOfRange { offset, size } => rpc_error(
            codes::INVALID_PARAMS,
            "offset_out_of_range",
            msg,
            json!({"offset": offset, "size": size}),
        ),
        BlobError::OffsetMismatch { expected, got } => rpc_error(
            codes::CONFLICT,
            "offset_mismatch",
            msg,
            json!({"expected_offset": expected, "got": got}),
        ),
        BlobError::PastDeclaredSize { would_be, size } => rpc_error(
            codes::CONFLICT,
            "past_declared_size",
            msg,
            json!({"would_be": would_be, "size": size}),
        ),
        BlobError::Incomplete { received, size } => rpc_error(
            codes::CONFLICT,
            "upload_incomplete",
            msg,
            json!({"received": received, "size": size}),
        ),
        BlobError::HashMismatch { expected, actual } => rpc_error(
            codes::CONFLICT,
            "hash_mismatch",
            msg,
            json!({"expected": expected, "actual": actual}),
        ),
        BlobError::TooManyUploads { max } => {
            rpc_error(codes::BUSY, "too_many_uploads", msg, json!({"max": max}))
        }
        BlobError::TooManyClientUploads { max } => rpc_error(
            codes::BUSY,
            "too_many_uploads",
            msg,
            json!({"max": max, "config_key": "blobs.max_open_uploads_per_client"}),
        ),
        BlobError::DiskSpace {
            needed,
            free,
            reserve,
            pending,
        } => rpc_error(
            codes::LIMIT_EXCEEDED,
            "disk_space",
            msg,
            json!({"needed": needed, "free": free, "reserve": reserve, "pending": pending}),
        ),
        BlobError::MimeTooLong => {
            rpc_error(codes::INVALID_PARAMS, "mime_too_long", msg, json!(null))
        }
        BlobError::BadCursor(_) => rpc_error(codes::INVALID_PARAMS, "bad_cursor", msg, json!(null)),
        BlobError::Store(s) => store_error(&s, msg, "blob request"),
        e @ (BlobError::Backend(_) | BlobError::Io { .. }) if e.is_disk_full() => {
            rpc_error(codes::UNAVAILABLE, "disk_full", msg, json!(null))
        }
        BlobError::Backend(_) | BlobError::Io { .. } => {
            tracing::error!("blob request failed: {msg}");
            rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
        }
    }
}

fn program_error(e: ProgramError) -> ErrorObjectOwned {
    let msg = e.to_string();
    match e {
        ProgramError::NotFound(id) => rpc_error(
            codes::NOT_FOUND,
            "program_not_found",
            msg,
            json!({"program_id": id}),
        ),
        ProgramError::ReceiptNotFound(id) => rpc_error(
            codes::NOT_FOUND,
            "receipt_not_found",
            msg,
            json!({"receipt_id": id}),
        ),
        ProgramError::InvalidProgram(v) => rpc_error(
            codes::INVALID_PROGRAM,
            "invalid_program",
            msg,
            json!({"reason": v.to_string()}),
        ),
        ProgramError::NotAttested {
            signed,
            threshold,
            refusals,
        } => rpc_error(
            codes::UNAVAILABLE,
            "not_attested",
            msg,
            json!({"signed": signed, "threshold": threshold, "refusals": refusals}),
        ),
        ProgramError::NotHome { program, home } => rpc_error(
            codes::UNAVAILABLE,
            "not_home",
            msg,
            json!({"program_id": program, "home": home}),
        ),
        ProgramError::BadRequest(_) => {
            rpc_error(codes::INVALID_PARAMS, "bad_request", msg, json!(null))
        }
        ProgramError::CallerRefused { kind, .. } => {
            rpc_error(codes::FORBIDDEN, kind, msg, json!(null))
        }
        ProgramError::RequestConflict {
            request_id,
            receipt,
        } => rpc_error(
            codes::CONFLICT,
            "request_id_conflict",
            msg,
            json!({"request_id": request_id, "receipt_id": receipt}),
        ),
        ProgramError::TooLarge {
            what,
            size,
            max,
            key,
        } => rpc_error(
            codes::LIMIT_EXCEEDED,
            "limit_exceeded",
            msg,
            json!({"what": what, "size": size, "max": max, "config_key": key}),
        ),
        ProgramError::ExecutionFailed(result) => {
            let (trap_kind, trap_message) = match &result.outcome {
                onvm_rpc_api::program::Outcome::Trap { kind, message } => {
                    (Some(kind.clone()), Some(message.clone()))
                }
                _ => (None, None),
            };
            rpc_error(
                codes::EXECUTION_FAILED,
                result.outcome.kind(),
                msg,
                json!({"trap_kind": trap_kind, "trap_message": trap_message, "fuel_used": result.fuel_used, "result": result}),
            )
        }
        ProgramError::Blob(b) => blob_error(b),
        ProgramError::Store(s) => store_error(&s, msg, "program request"),
        ProgramError::Internal(_) => {
            tracing::error!("program request failed: {msg}");
            rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
        }
    }
}

fn job_error(e: JobError) -> ErrorObjectOwned {
    let msg = e.to_string();
    match e {
        JobError::NotFound(id) => rpc_error(
            codes::NOT_FOUND,
            "job_not_found",
            msg,
            json!({"job_id": id}),
        ),
        JobError::BadRequest(_) => {
            rpc_error(codes::INVALID_PARAMS, "bad_request", msg, json!(null))
        }
        JobError::NoOutput { id, status } => rpc_error(
            codes::JOB_NOT_READY,
            "no_output",
            msg,
            json!({"job_id": id, "status": status}),
        ),
        JobError::Program(p) => program_error(p),
        JobError::Blob(b) => blob_error(b),
        JobError::Store(crate::store::StoreError::RequestConflict {
            request_id,
            existing,
            what,
        }) => rpc_error(
            codes::CONFLICT,
            "request_id_conflict",
            msg,
            json!({"request_id": request_id, "existing_job_id": existing, "differs_in": what}),
        ),
        JobError::Store(crate::store::StoreError::QueueFull { max }) => {
            rpc_error(codes::BUSY, "queue_full", msg, json!({"max": max}))
        }
        JobError::Store(s) => store_error(&s, msg, "job request"),
    }
}

/// A storage failure: one the client can wait out (a full disk, the database reopening after
/// a failed write) is `unavailable` with its kind; anything else is internal.
fn store_error(e: &crate::store::StoreError, msg: String, what: &str) -> ErrorObjectOwned {
    use crate::store::StoreError;
    match e {
        StoreError::DiskFull(_) => rpc_error(codes::UNAVAILABLE, "disk_full", msg, json!(null)),
        StoreError::Recovering(_) => {
            rpc_error(codes::UNAVAILABLE, "store_recovering", msg, json!(null))
        }
        _ => {
            tracing::error!("{what} failed: {msg}");
            rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
        }
    }
}

/// How long a lagging subscriber's typed close may wait for room in its connection buffer.
/// Only that subscription's task waits; nothing else in the node does.
const CLOSE_NOTICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one stream item, waiting for room in the client's connection buffer at most `lag`.
/// A client that makes no progress for that long has fallen behind: its subscription ends with
/// a typed close carrying the cursor to resume from (delivered when it reads again), and this
/// reports false. Only this subscription's task ever waits; the node and other clients do not.
async fn deliver<T: serde::Serialize>(
    sink: &mut SubscriptionSink,
    item: &T,
    lag: std::time::Duration,
    lagged: impl FnOnce() -> T,
) -> bool {
    let Ok(msg) = jsonrpsee::core::to_json_raw_value(item) else {
        return false;
    };
    if sink.send_timeout(msg, lag).await.is_ok() {
        return true;
    }
    if sink.is_closed() {
        return false;
    }
    let close = lagged();
    if let Ok(msg) = jsonrpsee::core::to_json_raw_value(&close) {
        let _ = sink.send_timeout(msg, CLOSE_NOTICE_TIMEOUT).await;
    }
    false
}

async fn close_finished(sink: &mut SubscriptionSink, resume_from_seq: u64) {
    let close = JobStreamItem::Closed {
        reason: "finished".into(),
        resume_from_seq,
    };
    if let Ok(msg) = jsonrpsee::core::to_json_raw_value(&close) {
        let _ = sink.send_timeout(msg, CLOSE_NOTICE_TIMEOUT).await;
    }
}

fn matches(filter: &JobFilter, e: &JobEvent) -> bool {
    filter.status.is_none_or(|s| s == e.status)
        && filter.program_id.is_none_or(|p| p == e.program_id)
}

/// Streams persisted events from `from_seq`, then follows live ones. The live channel is only a
/// wake-up: every delivery reads the store from the cursor, so there are no gaps and no
/// duplicates, even if the live channel overflowed.
async fn stream_events(
    lag: std::time::Duration,
    jobs: Jobs,
    mut sink: SubscriptionSink,
    job: Option<JobId>,
    filter: JobFilter,
    from_seq: u64,
) {
    let mut live = jobs.subscribe_live();
    let mut next = from_seq;
    loop {
        loop {
            let batch = match jobs.events_from(job, next, 256).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("job subscription: {e}");
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for event in batch {
                let seq = event.seq;
                let terminal = job.is_some() && event.status.is_terminal();
                if matches(&filter, &event)
                    && !deliver(&mut sink, &JobStreamItem::Event(event), lag, || {
                        JobStreamItem::Closed {
                            reason: "lagged".into(),
                            resume_from_seq: seq,
                        }
                    })
                    .await
                {
                    return;
                }
                next = seq + 1;
                if terminal {
                    close_finished(&mut sink, next).await;
                    return;
                }
            }
        }
        tokio::select! {
            _ = sink.closed() => return,
            r = live.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                }
            }
        }
    }
}

/// The RPC method implementations; cheap to clone.
#[derive(Clone)]
struct Handlers {
    ctx: Arc<NodeContext>,
    tokens: Arc<auth::Tokens>,
}

#[async_trait]
impl TokenApiServer for Handlers {
    async fn create(&self, request: TokenRequest) -> RpcResult<CreatedToken> {
        let tokens = self.tokens.clone();
        let created =
            tokio::task::spawn_blocking(move || tokens.create(request, crate::util::now_ms()))
                .await
                .map_err(|e| {
                    rpc_error(
                        codes::INTERNAL_ERROR,
                        "internal",
                        e.to_string(),
                        json!(null),
                    )
                })?
                .map_err(|e| e.to_rpc())?;
        tracing::info!(token = %created.info.id, scopes = ?created.info.scopes, "API token created");
        Ok(created)
    }

    async fn list(&self) -> RpcResult<Vec<TokenInfo>> {
        Ok(self.tokens.list(crate::util::now_ms()))
    }

    async fn revoke(&self, id: String) -> RpcResult<bool> {
        let tokens = self.tokens.clone();
        let revoked = tokio::task::spawn_blocking(move || tokens.revoke(&id))
            .await
            .map_err(|e| {
                rpc_error(
                    codes::INTERNAL_ERROR,
                    "internal",
                    e.to_string(),
                    json!(null),
                )
            })?
            .map_err(|e| e.to_rpc())?;
        Ok(revoked)
    }
}

#[async_trait]
impl NodeApiServer for Handlers {
    async fn info(&self) -> RpcResult<NodeInfo> {
        Ok(self.ctx.info())
    }

    async fn health(&self) -> RpcResult<Health> {
        Ok(self.ctx.health().await)
    }

    async fn metrics(&self) -> RpcResult<Metrics> {
        Ok(self.ctx.metrics().await)
    }
}

#[async_trait]
impl BlobApiServer for Handlers {
    async fn put(&self, data_base64: Base64Bytes, mime: Option<String>) -> RpcResult<BlobStat> {
        self.ctx
            .blobs
            .put(data_base64.0, mime)
            .await
            .map_err(blob_error)
    }

    async fn upload_begin(
        &self,
        ext: &jsonrpsee::Extensions,
        size: u64,
        mime: Option<String>,
    ) -> RpcResult<UploadStatus> {
        // Open uploads count against the client (token or IP) that began them; the
        // operator's cookie has no per-client cap.
        let owner = ext.get::<auth::Grant>().and_then(|g| g.client.clone());
        self.ctx
            .blobs
            .upload_begin(size, mime, owner)
            .await
            .map_err(blob_error)
    }

    async fn upload_append(
        &self,
        upload_id: UploadId,
        offset: u64,
        data_base64: Base64Bytes,
    ) -> RpcResult<UploadStatus> {
        self.ctx
            .blobs
            .upload_append(upload_id, offset, data_base64.0)
            .await
            .map_err(blob_error)
    }

    async fn upload_status(&self, upload_id: UploadId) -> RpcResult<UploadStatus> {
        self.ctx
            .blobs
            .upload_status(upload_id)
            .await
            .map_err(blob_error)
    }

    async fn upload_finish(
        &self,
        upload_id: UploadId,
        expected_id: Option<BlobId>,
    ) -> RpcResult<BlobStat> {
        self.ctx
            .blobs
            .upload_finish(upload_id, expected_id)
            .await
            .map_err(blob_error)
    }

    async fn upload_abort(&self, upload_id: UploadId) -> RpcResult<bool> {
        self.ctx
            .blobs
            .upload_abort(upload_id)
            .await
            .map_err(blob_error)
    }

    async fn get(
        &self,
        id: BlobId,
        offset: Option<u64>,
        length: Option<u64>,
    ) -> RpcResult<BlobChunk> {
        let blobs = &self.ctx.blobs;
        self.ctx
            .with_blob(id, || blobs.get(id, offset, length))
            .await
            .map_err(blob_error)
    }

    async fn stat(&self, id: BlobId) -> RpcResult<BlobStat> {
        let blobs = &self.ctx.blobs;
        self.ctx
            .with_blob(id, || blobs.stat(id))
            .await
            .map_err(blob_error)
    }

    async fn list(&self, cursor: Option<String>, limit: Option<u32>) -> RpcResult<BlobPage> {
        self.ctx.blobs.list(cursor, limit).await.map_err(blob_error)
    }
}

#[async_trait]
impl ProgramApiServer for Handlers {
    async fn committee(
        &self,
        program_id: ProgramId,
    ) -> RpcResult<onvm_rpc_api::committee::Committee> {
        let info = self
            .ctx
            .programs
            .info(program_id)
            .await
            .map_err(program_error)?;
        Ok(info.manifest.manifest.committee())
    }

    async fn deploy(&self, request: DeployRequest) -> RpcResult<DeployResult> {
        self.ctx
            .programs
            .deploy(request)
            .await
            .map_err(program_error)
    }

    async fn info(&self, program_id: ProgramId) -> RpcResult<ProgramInfo> {
        self.ctx
            .programs
            .info(program_id)
            .await
            .map_err(program_error)
    }

    async fn list(&self, cursor: Option<String>, limit: Option<u32>) -> RpcResult<ProgramPage> {
        self.ctx
            .programs
            .list(cursor, limit)
            .await
            .map_err(program_error)
    }

    async fn execute(
        &self,
        program_id: ProgramId,
        input_base64: Base64Bytes,
        options: Option<ExecuteOptions>,
    ) -> RpcResult<ExecuteResult> {
        let mut options = options.unwrap_or_default();
        if !options.read_only && options.request_id.is_none() && options.signed.is_none() {
            // Named here, so that if this node has to retry the call on another committee
            // member, the retry is recognised as the same call. (A signed call names its own:
            // the caller signed it.)
            options.request_id = Some(crate::programs::fresh_request_id());
        }
        if !options.read_only
            && let Some(home) = self.elsewhere(program_id).await?
        {
            return self
                .execute_with_failover(program_id, home, input_base64, options)
                .await;
        }
        self.ctx
            .programs
            .execute(program_id, input_base64.0, options)
            .await
            .map_err(program_error)
    }
}

#[async_trait]
impl StateApiServer for Handlers {
    async fn get(&self, program_id: ProgramId, key_base64: Base64Bytes) -> RpcResult<StateValue> {
        self.ctx
            .programs
            .state_get(program_id, key_base64.0)
            .await
            .map_err(program_error)
    }

    async fn root(&self, program_id: ProgramId) -> RpcResult<StateRoot> {
        let info = self
            .ctx
            .programs
            .info(program_id)
            .await
            .map_err(program_error)?;
        Ok(StateRoot {
            program_id,
            state_root: info.state_root,
            height: info.height,
            keys: info.keys,
        })
    }

    async fn proof(&self, program_id: ProgramId, key_base64: Base64Bytes) -> RpcResult<StateProof> {
        self.ctx
            .programs
            .state_proof(program_id, key_base64.0)
            .await
            .map_err(program_error)
    }
}

#[async_trait]
impl ReceiptApiServer for Handlers {
    async fn get(&self, receipt_id: ReceiptId) -> RpcResult<SignedReceipt> {
        self.ctx
            .programs
            .receipt(receipt_id)
            .await
            .map_err(program_error)
    }

    async fn list(
        &self,
        program_id: ProgramId,
        before_height: Option<u64>,
        limit: Option<u32>,
    ) -> RpcResult<ReceiptPage> {
        self.ctx
            .programs
            .receipts(program_id, before_height, limit)
            .await
            .map_err(program_error)
    }

    async fn verify(
        &self,
        receipt: SignedReceipt,
    ) -> RpcResult<onvm_rpc_api::committee::ReceiptVerification> {
        let info = self
            .ctx
            .programs
            .info(receipt.receipt.program_id)
            .await
            .map_err(program_error)?;
        let store = self.ctx.store.clone();
        let network = self.ctx.config.node.network_id.clone();
        let manifest = info.manifest.manifest;
        store_read(move || {
            let committee = store.verified_committee(&manifest)?;
            Ok(onvm_rpc_api::committee::verify_signed(
                &receipt, &committee, &network,
            ))
        })
        .await
    }

    async fn subscribe_receipts(
        &self,
        pending: PendingSubscriptionSink,
        program_id: Option<ProgramId>,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        use onvm_rpc_api::committee::ReceiptStreamItem;
        use onvm_rpc_api::dag::DagPayload;
        // Refused payloads are stored in the DAG too: stream only receipts this node applied
        // (one indexed read per receipt, so a lying peer's receipts never reach a dApp).
        let store = self.ctx.store.clone();
        let pick = move |seq, node: onvm_rpc_api::dag::DagNode| match node.body.payload {
            DagPayload::ExecutionCommitted { receipt, .. }
                if program_id.is_none_or(|p| p == receipt.receipt.program_id)
                    && store.receipt(&receipt.id).ok().flatten().is_some() =>
            {
                Some(ReceiptStreamItem::Receipt { seq, receipt })
            }
            _ => None,
        };
        let lagged = |seq| ReceiptStreamItem::Closed {
            reason: "lagged".into(),
            resume_from_seq: seq,
        };
        self.serve_dag_stream(pending, from_seq, pick, lagged).await
    }

    async fn input(&self, receipt_id: ReceiptId) -> RpcResult<Base64Bytes> {
        let store = self.ctx.store.clone();
        store_read(move || store.call_input(&receipt_id))
            .await?
            .map(Base64Bytes)
            .ok_or_else(|| {
                rpc_error(
                    codes::NOT_FOUND,
                    "receipt_not_found",
                    format!("no call input for receipt {receipt_id} on this node"),
                    json!({"receipt_id": receipt_id}),
                )
            })
    }

    async fn evidence(
        &self,
        program_id: ProgramId,
    ) -> RpcResult<Vec<onvm_rpc_api::committee::Evidence>> {
        let store = self.ctx.store.clone();
        store_read(move || store.evidence(&program_id)).await
    }
}

#[async_trait]
impl PeerApiServer for Handlers {
    async fn connect(&self, ticket: String) -> RpcResult<PeerInfo> {
        use crate::net::PeerError;
        self.ctx.net.peers().connect(&ticket).await.map_err(|e| {
            let msg = e.to_string();
            match e {
                PeerError::BadTicket(_) => {
                    rpc_error(codes::INVALID_PARAMS, "bad_ticket", msg, json!(null))
                }
                PeerError::SelfDial => {
                    rpc_error(codes::INVALID_PARAMS, "self_dial", msg, json!(null))
                }
                PeerError::WrongNetwork { theirs, .. } => rpc_error(
                    codes::CONFLICT,
                    "wrong_network",
                    msg,
                    json!({"their_network": theirs}),
                ),
                PeerError::Unreachable { .. }
                | PeerError::NotDelivered { .. }
                | PeerError::Protocol { .. } => {
                    rpc_error(codes::UNAVAILABLE, "peer_unreachable", msg, json!(null))
                }
            }
        })
    }

    async fn list(&self) -> RpcResult<Vec<PeerInfo>> {
        Ok(self.ctx.net.peers().list().await)
    }
}

/// Runs a blocking store read; any failure is an internal error.
async fn store_read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> RpcResult<T> {
    let internal = |msg: String| {
        tracing::error!("store read failed: {msg}");
        rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))
}

#[async_trait]
impl DagApiServer for Handlers {
    async fn heads(&self) -> RpcResult<onvm_rpc_api::dag::DagHeads> {
        let store = self.ctx.store.clone();
        let (heads, count, refused, deferred) = store_read(move || {
            Ok((
                store.dag_heads()?,
                store.dag_len()?,
                store.refused_dag_nodes(16)?,
                store.deferred_calls()?,
            ))
        })
        .await?;
        Ok(onvm_rpc_api::dag::DagHeads {
            heads,
            count,
            refused: refused
                .into_iter()
                .map(|(id, reason)| onvm_rpc_api::dag::RefusedNode { id, reason })
                .collect(),
            deferred,
        })
    }

    async fn get(&self, id: onvm_rpc_api::Hash32) -> RpcResult<onvm_rpc_api::dag::DagNode> {
        let store = self.ctx.store.clone();
        store_read(move || store.dag_node(&id))
            .await?
            .ok_or_else(|| {
                rpc_error(
                    codes::NOT_FOUND,
                    "dag_node_not_found",
                    format!("DAG node {id} not found"),
                    json!({"id": id}),
                )
            })
    }

    async fn subscribe_nodes(
        &self,
        pending: PendingSubscriptionSink,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        use onvm_rpc_api::dag::DagStreamItem;
        let pick = |seq, node: onvm_rpc_api::dag::DagNode| {
            Some(DagStreamItem::Node {
                seq,
                id: node.id(),
                node: Box::new(node),
            })
        };
        let lagged = |seq| DagStreamItem::Closed {
            reason: "lagged".into(),
            resume_from_seq: seq,
        };
        self.serve_dag_stream(pending, from_seq, pick, lagged).await
    }
}

/// Streams stored DAG nodes from arrival sequence `from` as the items `pick` makes of them
/// (nodes it maps to None are skipped), then follows new ones. The store's change signal is
/// only a wake-up: every delivery reads the log from the cursor, so nothing is missed.
async fn stream_dag<T: serde::Serialize>(
    lag: std::time::Duration,
    store: crate::store::Store,
    mut sink: SubscriptionSink,
    from: u64,
    pick: impl Fn(u64, onvm_rpc_api::dag::DagNode) -> Option<T>,
    lagged: impl Fn(u64) -> T,
) {
    let mut changes = store.dag_changes();
    let mut next = from;
    loop {
        loop {
            let s = store.clone();
            let after = next - 1;
            let batch = match store_read(move || s.dag_log_after(after, 256)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("DAG subscription: {}", e.message());
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (seq, node) in batch {
                if let Some(item) = pick(seq, node)
                    && !deliver(&mut sink, &item, lag, || lagged(seq)).await
                {
                    return;
                }
                next = seq + 1;
            }
        }
        tokio::select! {
            _ = sink.closed() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

impl Handlers {
    /// Accepts a subscription over the DAG log from `from_seq` (default: the next node to
    /// arrive) and streams what `pick` makes of each node, with the lag/resume contract.
    async fn serve_dag_stream<T: serde::Serialize>(
        &self,
        pending: PendingSubscriptionSink,
        from_seq: Option<u64>,
        pick: impl Fn(u64, onvm_rpc_api::dag::DagNode) -> Option<T>,
        lagged: impl Fn(u64) -> T,
    ) -> jsonrpsee::core::SubscriptionResult {
        let from = match from_seq {
            Some(s) => s.max(1),
            None => {
                let store = self.ctx.store.clone();
                match store_read(move || store.dag_last_seq()).await {
                    Ok(last) => last + 1,
                    Err(e) => {
                        pending.reject(e).await;
                        return Ok(());
                    }
                }
            }
        };
        let sink = pending.accept().await?;
        stream_dag(self.lag(), self.ctx.store.clone(), sink, from, pick, lagged).await;
        Ok(())
    }

    /// The home of `program` when it is another node (calls for it are forwarded there).
    async fn elsewhere(&self, program: ProgramId) -> RpcResult<Option<onvm_rpc_api::Hash32>> {
        match self.ctx.programs.check_home(program).await {
            Ok(()) => Ok(None),
            Err(ProgramError::NotHome { home, .. }) => Ok(Some(home)),
            Err(e) => Err(program_error(e)),
        }
    }

    /// Forwards a call to the program's home and, once it answers, pulls the home's new DAG
    /// nodes, so the call's receipt, state and job are visible on this node when it returns.
    async fn forward(
        &self,
        home: onvm_rpc_api::Hash32,
        call: &ForwardedCall,
    ) -> RpcResult<ForwardedReply> {
        let peers = self.ctx.net.peers();
        let reply = peers
            .forward(home, call)
            .await
            .map_err(|e| home_unreachable(home, &e))?;
        self.finish_forward(home, reply).await
    }

    /// Turns a forwarded reply into the RPC result, after pulling the sender's DAG.
    async fn finish_forward(
        &self,
        from: onvm_rpc_api::Hash32,
        reply: ForwardedReply,
    ) -> RpcResult<ForwardedReply> {
        let peers = self.ctx.net.peers();
        if let ForwardedReply::Error {
            code,
            message,
            data,
        } = reply
        {
            return Err(ErrorObjectOwned::owned(code, message, data));
        }
        if let Err(e) = peers.sync_from(from).await {
            tracing::debug!(%from, "pulling the DAG after a forwarded call: {e}");
        }
        Ok(reply)
    }

    /// A writing call, sent to the first live member of the program's committee: the home,
    /// unless it failed recently (`net.suspect_ms`). When the node it was sent to does not
    /// answer (down, or the connection broke mid-call), the call goes to the next member in
    /// rank order, which takes over as sequencer (this node itself, if it is that member). The
    /// retry carries the same request id, and a sequencer finishes any proposal its
    /// predecessor left signed before it runs anything, so a call that did commit on the
    /// failed node is answered from its receipt instead of running twice.
    async fn execute_with_failover(
        &self,
        program_id: ProgramId,
        home: onvm_rpc_api::Hash32,
        input_base64: Base64Bytes,
        options: ExecuteOptions,
    ) -> RpcResult<ExecuteResult> {
        let reply = self
            .to_sequencer(program_id, home, |member| {
                let (input_base64, options) = (input_base64.clone(), options.clone());
                match member {
                    Sequencer::Home => ForwardedCall::Execute {
                        program_id,
                        input_base64,
                        options,
                    },
                    Sequencer::Takeover => ForwardedCall::ExecuteTakeover {
                        program_id,
                        input_base64,
                        options,
                    },
                }
            })
            .await?;
        match reply {
            Some(reply) => executed(reply),
            None => {
                tracing::info!(%program_id, "the members ranked before this node are down: sequencing here");
                self.ctx
                    .programs
                    .execute_takeover(program_id, input_base64.0, options)
                    .await
                    .map_err(program_error)
            }
        }
    }

    /// A job for a program this node does not sequence: to its home, or (job failover) to the
    /// next live member that takes over, exactly like a writing call. The job id is derived
    /// from the program and request id, so a resubmission to any node finds the same job.
    async fn submit_with_failover(
        &self,
        home: onvm_rpc_api::Hash32,
        request: SubmitJob,
    ) -> RpcResult<SubmitResult> {
        let reply = self
            .to_sequencer(request.program_id, home, |member| {
                let request = request.clone();
                match member {
                    Sequencer::Home => ForwardedCall::SubmitJob { request },
                    Sequencer::Takeover => ForwardedCall::SubmitJobTakeover { request },
                }
            })
            .await?;
        match reply {
            Some(ForwardedReply::Submitted { result }) => Ok(*result),
            Some(other) => Err(unexpected(other)),
            None => {
                tracing::info!(program_id = %request.program_id, "the members ranked before this node are down: accepting the job here");
                self.ctx
                    .jobs
                    .submit_takeover(request)
                    .await
                    .map_err(job_error)
            }
        }
    }

    /// Sends `call(role)` to the members of `program_id`'s committee in rank order (live ones
    /// first, then those suspected within `net.suspect_ms`) until one answers; returns its
    /// reply, or None when the next member to try is this node itself. A member that does not
    /// answer is suspected and the next one is tried. A committee of one has no other member
    /// to fail over to: only the home is tried.
    async fn to_sequencer(
        &self,
        program_id: ProgramId,
        home: onvm_rpc_api::Hash32,
        call: impl Fn(Sequencer) -> ForwardedCall,
    ) -> RpcResult<Option<ForwardedReply>> {
        let peers = self.ctx.net.peers();
        let mut committee: Vec<onvm_rpc_api::Hash32> = self
            .ctx
            .programs
            .info(program_id)
            .await
            .map_err(program_error)?
            .manifest
            .manifest
            .committee
            .iter()
            .map(|m| m.endpoint_id)
            .collect();
        if committee.is_empty() {
            committee.push(home);
        }
        let (live, suspected): (Vec<_>, Vec<_>) =
            committee.iter().partition(|m| !peers.is_suspected(m));
        let me = onvm_rpc_api::Hash32(*self.ctx.identity.endpoint_id().as_bytes());
        let mut failure = None;
        for member in live.into_iter().chain(suspected) {
            if member == me {
                return Ok(None);
            }
            let role = if member == home {
                Sequencer::Home
            } else {
                Sequencer::Takeover
            };
            match peers.forward(member, &call(role)).await {
                Ok(reply) => {
                    peers.clear_suspect(&member);
                    return self.finish_forward(member, reply).await.map(Some);
                }
                Err(e) => {
                    tracing::warn!(%program_id, %member, "sequencer did not answer, trying the next member: {e}");
                    peers.suspect(member);
                    failure = Some((member, e));
                }
            }
        }
        Err(match failure {
            Some((member, e)) => home_unreachable(member, &e),
            None => rpc_error(
                codes::UNAVAILABLE,
                "home_unreachable",
                "no committee member could be reached",
                json!({"home": home}),
            ),
        })
    }

    fn lag(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ctx.config.rpc.subscriber_lag_ms)
    }
}

#[async_trait]
impl JobApiServer for Handlers {
    async fn submit(&self, request: SubmitJob) -> RpcResult<SubmitResult> {
        if let Some(home) = self.elsewhere(request.program_id).await? {
            return self.submit_with_failover(home, request).await;
        }
        self.ctx.jobs.submit(request).await.map_err(job_error)
    }

    async fn status(&self, job_id: JobId) -> RpcResult<JobInfo> {
        self.ctx.jobs.status(job_id).await.map_err(job_error)
    }

    async fn output(&self, job_id: JobId) -> RpcResult<JobOutput> {
        match self.ctx.jobs.output(job_id).await {
            // A replicated job's output lives on its home (or any node that read it): fetch it.
            Err(JobError::Blob(BlobError::NotFound(blob))) => {
                let blobs = self.ctx.blobs.clone();
                self.ctx
                    .with_blob(blob, || blobs.stat(blob))
                    .await
                    .map_err(blob_error)?;
                self.ctx.jobs.output(job_id).await.map_err(job_error)
            }
            other => other.map_err(job_error),
        }
    }

    async fn cancel(&self, job_id: JobId) -> RpcResult<JobInfo> {
        if let Ok(job) = self.ctx.jobs.status(job_id).await
            && let Some(home) = self.elsewhere(job.program_id).await?
        {
            return match self
                .forward(home, &ForwardedCall::CancelJob { job_id })
                .await?
            {
                ForwardedReply::Cancelled { job } => Ok(*job),
                other => Err(unexpected(other)),
            };
        }
        self.ctx.jobs.cancel(job_id).await.map_err(job_error)
    }

    async fn list(
        &self,
        filter: Option<JobFilter>,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> RpcResult<JobPage> {
        self.ctx
            .jobs
            .list(filter.unwrap_or_default(), cursor, limit)
            .await
            .map_err(job_error)
    }

    async fn logs(&self, job_id: JobId) -> RpcResult<JobLogs> {
        self.ctx.jobs.logs(job_id).await.map_err(job_error)
    }

    async fn subscribe_job(
        &self,
        pending: PendingSubscriptionSink,
        job_id: JobId,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        if let Err(e) = self.ctx.jobs.status(job_id).await {
            pending.reject(job_error(e)).await;
            return Ok(());
        }
        let sink = pending.accept().await?;
        stream_events(
            self.lag(),
            self.ctx.jobs.clone(),
            sink,
            Some(job_id),
            JobFilter::default(),
            from_seq.unwrap_or(0),
        )
        .await;
        Ok(())
    }

    async fn subscribe_feed(
        &self,
        pending: PendingSubscriptionSink,
        filter: Option<JobFilter>,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        let from = match from_seq {
            Some(s) => s,
            None => match self.ctx.jobs.last_seq().await {
                Ok(last) => last + 1,
                Err(e) => {
                    pending.reject(job_error(e)).await;
                    return Ok(());
                }
            },
        };
        let sink = pending.accept().await?;
        stream_events(
            self.lag(),
            self.ctx.jobs.clone(),
            sink,
            None,
            filter.unwrap_or_default(),
            from,
        )
        .await;
        Ok(())
    }
}

/// Binds the server with the configured limits and starts serving; returns the bound address.
fn home_unreachable(node: onvm_rpc_api::Hash32, e: &crate::net::PeerError) -> ErrorObjectOwned {
    rpc_error(
        codes::UNAVAILABLE,
        "home_unreachable",
        format!("the program's home could not be reached: {e}"),
        json!({"home": node}),
    )
}

fn executed(reply: ForwardedReply) -> RpcResult<ExecuteResult> {
    match reply {
        ForwardedReply::Executed { result } => Ok(*result),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: ForwardedReply) -> ErrorObjectOwned {
    rpc_error(
        codes::INTERNAL_ERROR,
        "internal",
        format!("the program's home answered with an unexpected reply: {reply:?}"),
        json!(null),
    )
}

/// Whom a forwarded call addresses: the program's home, or a member taking over for it.
#[derive(Debug, Clone, Copy)]
enum Sequencer {
    Home,
    Takeover,
}

fn execute_reply(result: Result<ExecuteResult, ProgramError>) -> ForwardedReply {
    match result {
        Ok(result) => ForwardedReply::Executed {
            result: Box::new(result),
        },
        Err(e) => forwarded_error(program_error(e)),
    }
}

fn forwarded_error(e: ErrorObjectOwned) -> ForwardedReply {
    ForwardedReply::Error {
        code: e.code(),
        message: e.message().to_string(),
        data: e.data().and_then(|d| serde_json::from_str(d.get()).ok()),
    }
}

/// Runs calls other nodes forward to this node (the home of their program). Only local
/// execution: a forwarded call is never forwarded again. Weak: the network layer that holds
/// this handler is itself owned by the node context.
struct ForwardedCalls(std::sync::Weak<NodeContext>);

impl CallHandler for ForwardedCalls {
    fn handle(
        &self,
        from: iroh::EndpointId,
        call: ForwardedCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ForwardedReply> + Send>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let Some(ctx) = ctx else {
                return ForwardedReply::Error {
                    code: codes::UNAVAILABLE,
                    message: "this node is shutting down".into(),
                    data: None,
                };
            };
            tracing::debug!(%from, "forwarded call");
            if let Err(refusal) = admit_caller(&ctx, from, &call).await {
                tracing::debug!(%from, "forwarded call refused: {refusal}");
                return ForwardedReply::Error {
                    code: codes::FORBIDDEN,
                    message: refusal,
                    data: Some(json!({"kind": "forbidden"})),
                };
            }
            match call {
                ForwardedCall::Execute {
                    program_id,
                    input_base64,
                    options,
                } => execute_reply(
                    ctx.programs
                        .execute(program_id, input_base64.0, options)
                        .await,
                ),
                ForwardedCall::SubmitJob { request } => submit_for(&ctx, request, false).await,
                ForwardedCall::SubmitJobTakeover { request } => {
                    submit_for(&ctx, request, true).await
                }
                ForwardedCall::Attest {
                    receipt,
                    input_base64,
                } => attest_for(&ctx, from, *receipt, input_base64.0).await,
                ForwardedCall::ExecuteTakeover {
                    program_id,
                    input_base64,
                    options,
                } => execute_reply(
                    ctx.programs
                        .execute_takeover(program_id, input_base64.0, options)
                        .await,
                ),
                ForwardedCall::VoteAt { program_id, height } => {
                    match ctx.programs.vote_report(program_id, height).await {
                        Ok((applied_height, vote)) => ForwardedReply::Vote {
                            applied_height,
                            vote: vote.map(Box::new),
                        },
                        // A member that has not seen the program yet has signed nothing for it:
                        // a true answer, and one a sequencer right after a deploy needs.
                        Err(ProgramError::NotFound(_)) => ForwardedReply::Vote {
                            applied_height: 0,
                            vote: None,
                        },
                        Err(e) => forwarded_error(program_error(e)),
                    }
                }
                ForwardedCall::CancelJob { job_id } => match ctx.jobs.cancel(job_id).await {
                    Ok(job) => ForwardedReply::Cancelled { job: Box::new(job) },
                    Err(e) => forwarded_error(job_error(e)),
                },
            }
        })
    }
}

/// Accepts a job another node forwarded, as the home or (`takeover`) as a member standing in
/// for it. An input blob may live only on the node that accepted the job: fetched first.
async fn submit_for(ctx: &NodeContext, request: SubmitJob, takeover: bool) -> ForwardedReply {
    if let Some(blob) = request.input_blob {
        let blobs = ctx.blobs.clone();
        if let Err(e) = ctx.with_blob(blob, || blobs.stat(blob)).await {
            return forwarded_error(blob_error(e));
        }
    }
    let submitted = if takeover {
        ctx.jobs.submit_takeover(request).await
    } else {
        ctx.jobs.submit(request).await
    };
    match submitted {
        Ok(result) => ForwardedReply::Submitted {
            result: Box::new(result),
        },
        Err(e) => forwarded_error(job_error(e)),
    }
}

/// Who may use `/onvm/call/1`: only nodes announced in this node's DAG, which is bound to this
/// network (a caller not seen yet is pulled from once: a node that just joined may call before
/// its announcement arrived); and the member-only requests (`attest`, `vote_at`) only from the
/// members of that program's committee. Accepting nodes forward calls and jobs; members attest.
async fn admit_caller(
    ctx: &NodeContext,
    from: iroh::EndpointId,
    call: &ForwardedCall,
) -> Result<(), String> {
    let caller = onvm_rpc_api::Hash32(*from.as_bytes());
    let announced = |store: crate::store::Store| async move {
        tokio::task::spawn_blocking(move || store.is_announced(&caller))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    };
    if !announced(ctx.store.clone()).await? {
        if let Err(e) = ctx.net.peers().sync_from(caller).await {
            tracing::debug!(%from, "pulling an unknown caller's DAG: {e}");
        }
        if !announced(ctx.store.clone()).await? {
            return Err(format!(
                "{from} is not an announced node of network `{}`",
                ctx.config.node.network_id
            ));
        }
    }
    let program = match call {
        ForwardedCall::Attest { receipt, .. } => receipt.program_id,
        ForwardedCall::VoteAt { program_id, .. } => *program_id,
        _ => return Ok(()),
    };
    // An unknown program is pulled by the attest path; its own checks then apply.
    match ctx.programs.info(program).await {
        Ok(info)
            if !info
                .manifest
                .manifest
                .committee
                .iter()
                .any(|m| m.endpoint_id == caller) =>
        {
            Err(format!("{from} is not a member of {program}'s committee"))
        }
        _ => Ok(()),
    }
}

/// A member's answer to a proposal: signs, or says why not. A replica that is behind, or has
/// not seen the program yet (a call right after its deploy), pulls from the sequencer, which
/// holds both, and tries again (the proposal's parent call may still be in flight).
async fn attest_for(
    ctx: &NodeContext,
    from: iroh::EndpointId,
    receipt: onvm_rpc_api::program::ExecutionReceipt,
    input: Vec<u8>,
) -> ForwardedReply {
    use crate::programs::AttestError;
    let sequencer = onvm_rpc_api::Hash32(*from.as_bytes());
    // The proposal usually arrives a moment before the previous call's commit does: pull it
    // at once, and back off only if it is still missing.
    let mut pause = std::time::Duration::from_millis(2);
    for _ in 0..20 {
        match ctx.programs.attest(receipt.clone(), input.clone()).await {
            Ok(signature) => {
                return ForwardedReply::Attested {
                    signature: onvm_rpc_api::HexBytes(signature),
                };
            }
            Err(
                AttestError::Behind { .. }
                | AttestError::Program(crate::programs::ProgramError::NotFound(_)),
            ) => match ctx.net.peers().sync_from(sequencer).await {
                Ok(added) if added > 0 => {}
                other => {
                    if let Err(e) = other {
                        tracing::debug!("pulling from the sequencer before attesting: {e}");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
            },
            Err(AttestError::Program(e)) => return forwarded_error(program_error(e)),
            Err(e) => {
                return ForwardedReply::Error {
                    code: codes::CONFLICT,
                    message: e.to_string(),
                    data: None,
                };
            }
        }
    }
    ForwardedReply::Error {
        code: codes::UNAVAILABLE,
        message: "this replica did not catch up with the proposal's height".into(),
        data: None,
    }
}

/// One request to a committee member. A member that failed recently (`net.suspect_ms`) is not
/// waited for: a dead member would otherwise cost every call a dial timeout.
async fn ask_member(
    ctx: &NodeContext,
    member: onvm_rpc_api::Hash32,
    call: &ForwardedCall,
) -> Result<ForwardedReply, String> {
    let peers = ctx.net.peers();
    if peers.is_suspected(&member) {
        return Err("did not answer recently (net.suspect_ms)".into());
    }
    match peers.forward(member, call).await {
        Ok(reply) => {
            peers.clear_suspect(&member);
            Ok(reply)
        }
        Err(e) => {
            peers.suspect(member);
            Err(e.to_string())
        }
    }
}

/// Sends proposals to committee members over `/onvm/call/1`.
struct CommitteeLink(std::sync::Weak<NodeContext>);

impl crate::programs::Attestor for CommitteeLink {
    fn request(
        &self,
        member: onvm_rpc_api::Hash32,
        proposed: onvm_rpc_api::program::ExecutionReceipt,
        input: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or("this node is shutting down")?;
            let call = ForwardedCall::Attest {
                receipt: Box::new(proposed),
                input_base64: input.into(),
            };
            match ask_member(&ctx, member, &call).await? {
                ForwardedReply::Attested { signature } => Ok(signature.0),
                ForwardedReply::Error { message, .. } => Err(message),
                other => Err(format!("unexpected reply {other:?}")),
            }
        })
    }

    fn vote_at(
        &self,
        member: onvm_rpc_api::Hash32,
        program: ProgramId,
        height: u64,
    ) -> crate::programs::BoxFuture<Result<(u64, Option<crate::store::Vote>), String>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or("this node is shutting down")?;
            let call = ForwardedCall::VoteAt {
                program_id: program,
                height,
            };
            match ask_member(&ctx, member, &call).await? {
                ForwardedReply::Vote {
                    applied_height,
                    vote,
                } => Ok((applied_height, vote.map(|v| *v))),
                ForwardedReply::Error { message, .. } => Err(message),
                other => Err(format!("unexpected reply {other:?}")),
            }
        })
    }

    fn catch_up(&self, member: onvm_rpc_api::Hash32) -> crate::programs::BoxFuture<()> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            if let Some(ctx) = ctx
                && let Err(e) = ctx.net.peers().sync_from(member).await
            {
                tracing::debug!(%member, "pulling a member that is ahead: {e}");
            }
        })
    }
}

/// The running JSON-RPC server.
pub struct RpcServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// The operator's cookie file, removed when this is dropped.
    pub cookie: Option<cookie::Cookie>,
}

/// How the server treats clients: set by `run-node` (tokens required for writes), `run-node
/// --no-auth` and `onvm dev` (open) through `rpc.auth`.
fn policy_of(config: &RpcConfig) -> Result<auth::Policy, RpcError> {
    let anonymous = config
        .anonymous_scopes
        .iter()
        .map(|s| s.parse::<onvm_rpc_api::auth::Scope>())
        .collect::<Result<_, _>>()
        .map_err(|e| RpcError::Register(format!("rpc.anonymous_scopes: {e}")))?;
    Ok(auth::Policy {
        auth: config.auth,
        anonymous,
        origins: config.allowed_origins.clone(),
        hosts: config.allowed_hosts.clone(),
        max_per_ip: config.max_connections_per_ip as usize,
    })
}

pub async fn start(config: &RpcConfig, ctx: Arc<NodeContext>) -> Result<RpcServer, RpcError> {
    ctx.programs
        .set_attestor(Arc::new(CommitteeLink(Arc::downgrade(&ctx))));
    ctx.net
        .peers()
        .set_call_handler(Arc::new(ForwardedCalls(Arc::downgrade(&ctx))));
    let mut server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_bytes)
        .max_response_body_size(config.max_response_bytes)
        .max_connections(config.max_connections)
        .max_subscriptions_per_connection(config.max_subscriptions_per_connection)
        .set_message_buffer_capacity(config.message_buffer)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch));
    if config.ping_interval_ms > 0 {
        // A connection that answers no ping (nor sends anything) for idle_timeout_ms is closed,
        // so idle sockets cannot hold the connection slots.
        server_config = server_config.enable_ws_ping(
            jsonrpsee::server::PingConfig::new()
                .ping_interval(std::time::Duration::from_millis(config.ping_interval_ms))
                .inactive_limit(std::time::Duration::from_millis(config.idle_timeout_ms))
                .max_failures(1),
        );
    }
    let addr = config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| RpcError::Bind { addr, cause })?;
    let local = listener
        .local_addr()
        .map_err(|cause| RpcError::Bind { addr, cause })?;
    let tokens = Arc::new(
        auth::Tokens::load(ctx.store.clone())
            .map_err(|e| RpcError::Register(format!("loading API tokens: {e}")))?,
    );
    let cookie = if config.auth {
        match cookie::Cookie::create(local.port()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "could not write the RPC cookie file ({e}): local CLI writes will need a token"
                );
                None
            }
        }
    } else {
        None
    };
    let door = Arc::new(auth::FrontDoor {
        policy: policy_of(config)?,
        tokens: tokens.clone(),
        cookie: cookie.as_ref().map(|c| c.secret.clone()),
        per_ip: Arc::default(),
    });
    let handlers = Handlers {
        ctx,
        tokens: tokens.clone(),
    };
    let h = handlers;
    let mut module = RpcModule::new(());
    let namespaces: [jsonrpsee::Methods; 9] = [
        NodeApiServer::into_rpc(h.clone()).into(),
        BlobApiServer::into_rpc(h.clone()).into(),
        ProgramApiServer::into_rpc(h.clone()).into(),
        StateApiServer::into_rpc(h.clone()).into(),
        ReceiptApiServer::into_rpc(h.clone()).into(),
        DagApiServer::into_rpc(h.clone()).into(),
        PeerApiServer::into_rpc(h.clone()).into(),
        TokenApiServer::into_rpc(h.clone()).into(),
        JobApiServer::into_rpc(h).into(),
    ];
    for methods in namespaces {
        module
            .merge(methods)
            .map_err(|e| RpcError::Register(e.to_string()))?;
    }
    // Every method is in the scope table, so none is open by omission.
    if let Some(unmapped) = module
        .method_names()
        .find(|m| onvm_rpc_api::auth::scope_of(m).is_none())
    {
        return Err(RpcError::Register(format!(
            "method `{unmapped}` has no scope in onvm_rpc_api::auth::scope_of"
        )));
    }
    let methods: jsonrpsee::Methods = module.into();
    let services = Server::builder()
        .set_config(server_config.build())
        .set_rpc_middleware(
            jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new().layer(auth::ScopeLayer {
                tokens,
                rates: auth::Rates {
                    connection: limits::Rate {
                        per_sec: config.calls_per_sec,
                        burst: config.calls_burst,
                    },
                    client: limits::Rate {
                        per_sec: config.client_calls_per_sec,
                        burst: config.client_calls_burst,
                    },
                    clients: Arc::default(),
                },
            }),
        )
        .to_service_builder();
    let (stop, handle) = jsonrpsee::server::stop_channel();
    tokio::spawn(accept_loop(listener, services, methods, stop, door));
    Ok(RpcServer {
        addr: local,
        handle,
        cookie,
    })
}

/// Accepts TCP connections until the server is stopped. Each HTTP request (a WebSocket
/// handshake is one) passes the front door first; the per-IP permit it takes lives as long as
/// the request, or the WebSocket connection it opens.
/// The jsonrpsee service with the scope check in front of every call.
type Services = jsonrpsee::server::TowerServiceBuilder<
    tower::layer::util::Stack<auth::ScopeLayer, tower::layer::util::Identity>,
    tower::layer::util::Identity,
>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn accept_loop(
    listener: tokio::net::TcpListener,
    services: Services,
    methods: jsonrpsee::Methods,
    stop: jsonrpsee::server::StopHandle,
    door: Arc<auth::FrontDoor>,
) {
    loop {
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!("accepting an RPC connection: {e}");
                    // Out of file descriptors: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.clone().shutdown() => break,
        };
        let (services, methods, stop_conn, door) = (
            services.clone(),
            methods.clone(),
            stop.clone(),
            door.clone(),
        );
        let service = tower::service_fn(
            move |mut request: jsonrpsee::server::HttpRequest<hyper::body::Incoming>| {
                let admission = door.admit(&mut request, remote.ip(), crate::util::now_ms());
                let permit = door.per_ip.acquire(remote.ip(), door.policy.max_per_ip);
                let mut inner = services.clone().build(methods.clone(), stop_conn.clone());
                let max_per_ip = door.policy.max_per_ip;
                let reply: std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = Result<jsonrpsee::server::HttpResponse, BoxError>,
                            > + Send,
                    >,
                > = Box::pin(async move {
                    use tower::Service;
                    let (grant, cors) = match admission {
                        Err(refusal) => return Ok(refusal.into_response()),
                        Ok(auth::Admission::Preflight { origin }) => {
                            return Ok(auth::preflight(&origin));
                        }
                        Ok(auth::Admission::Pass { grant, cors }) => (grant, cors),
                    };
                    let Some(permit) = permit else {
                        return Ok(auth::Refusal {
                            status: 429,
                            reason: format!(
                                "too many open requests and connections from {} (rpc.max_connections_per_ip = {max_per_ip}); close some and retry",
                                remote.ip()
                            ),
                        }
                        .into_response());
                    };
                    request.extensions_mut().insert(grant);
                    request.extensions_mut().insert(permit);
                    let mut response: jsonrpsee::server::HttpResponse =
                        match inner.call(request).await {
                            Ok(response) => response,
                            Err(e) => return Err(e),
                        };
                    if let Some(origin) = cors {
                        auth::decorate(&mut response, &origin);
                    }
                    Ok(response)
                });
                reply
            },
        );
        let stopped = stop.clone().shutdown();
        // Connection errors (a client vanishing mid-request) are logged by jsonrpsee at debug.
        tokio::spawn(jsonrpsee::server::serve_with_graceful_shutdown(
            socket, service, stopped,
        ));
    }
}
