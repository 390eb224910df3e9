//! The JSON-RPC traits. The node implements the generated `*Server` traits; with the `client`
//! feature, jsonrpsee also generates typed `*Client` extension traits for any jsonrpsee client.

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;

use crate::ids::{BlobId, JobId, ProgramId, ReceiptId, UploadId};
use crate::jobs::{JobFilter, JobInfo, JobLogs, JobOutput, JobPage, SubmitJob, SubmitResult};
use crate::program::{
    DeployRequest, DeployResult, ExecuteOptions, ExecuteResult, ProgramInfo, ProgramPage,
    ReceiptPage, SignedReceipt, StateProof, StateRoot, StateValue,
};
use crate::types::{
    Base64Bytes, BlobChunk, BlobPage, BlobStat, Health, Metrics, NodeInfo, PeerInfo, UploadStatus,
};

/// `node_*`: identity, health and metrics of the node answering.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "node"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "node"))]
pub trait NodeApi {
    /// Who this node is: endpoint id, ticket, addresses, version, uptime.
    #[method(name = "info")]
    async fn info(&self) -> RpcResult<NodeInfo>;

    /// Liveness and readiness, with the reason when not ready.
    #[method(name = "health")]
    async fn health(&self) -> RpcResult<Health>;

    /// Counters and gauges.
    #[method(name = "metrics")]
    async fn metrics(&self) -> RpcResult<Metrics>;
}

/// `blob_*`: content-addressed blobs (id = BLAKE3 of the bytes = the iroh-blobs hash).
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "blob"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "blob"))]
pub trait BlobApi {
    /// Stores a small blob sent inline (at most `blobs.max_inline_bytes`). Idempotent.
    #[method(name = "put")]
    async fn put(&self, data_base64: Base64Bytes, mime: Option<String>) -> RpcResult<BlobStat>;

    /// Opens a chunked upload of `size` bytes; returns the session to append to.
    #[method(name = "upload_begin", with_extensions)]
    async fn upload_begin(&self, size: u64, mime: Option<String>) -> RpcResult<UploadStatus>;

    /// Appends a chunk at `offset`, which must equal the bytes received so far. Re-sending the
    /// last chunk after a lost reply is detected and accepted (see docs/RPC.md).
    #[method(name = "upload_append", with_extensions)]
    async fn upload_append(
        &self,
        upload_id: UploadId,
        offset: u64,
        data_base64: Base64Bytes,
    ) -> RpcResult<UploadStatus>;

    /// Where an upload stands: resume from `received`.
    #[method(name = "upload_status", with_extensions)]
    async fn upload_status(&self, upload_id: UploadId) -> RpcResult<UploadStatus>;

    /// Completes an upload once all bytes arrived; optionally checks the expected id.
    #[method(name = "upload_finish", with_extensions)]
    async fn upload_finish(
        &self,
        upload_id: UploadId,
        expected_id: Option<BlobId>,
    ) -> RpcResult<BlobStat>;

    /// Drops an upload session and its partial data. Idempotent.
    #[method(name = "upload_abort", with_extensions)]
    async fn upload_abort(&self, upload_id: UploadId) -> RpcResult<bool>;

    /// Reads `length` bytes from `offset` (default: from 0 to the end, if that fits inline).
    #[method(name = "get")]
    async fn get(
        &self,
        id: BlobId,
        offset: Option<u64>,
        length: Option<u64>,
    ) -> RpcResult<BlobChunk>;

    /// Size, mime type and creation time of a blob.
    #[method(name = "stat")]
    async fn stat(&self, id: BlobId) -> RpcResult<BlobStat>;

    /// Blobs on this node ordered by id, `limit` per page (default 100, at most 1000).
    #[method(name = "list")]
    async fn list(&self, cursor: Option<String>, limit: Option<u32>) -> RpcResult<BlobPage>;
}

/// `program_*`: deploy and call WebAssembly programs.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "program"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "program"))]
pub trait ProgramApi {
    /// Validates, stores and registers a program; idempotent for the same code and salt.
    #[method(name = "deploy")]
    async fn deploy(&self, request: DeployRequest) -> RpcResult<DeployResult>;

    /// The signed manifest and current state root / height of a program.
    #[method(name = "info")]
    async fn info(&self, program_id: ProgramId) -> RpcResult<ProgramInfo>;

    /// The catalog, ordered by program id.
    #[method(name = "list")]
    async fn list(&self, cursor: Option<String>, limit: Option<u32>) -> RpcResult<ProgramPage>;

    /// Runs a call. A failed call is an error with code -32020 whose `data.result` holds the
    /// outcome and (for writing calls) the receipt.
    #[method(name = "execute")]
    async fn execute(
        &self,
        program_id: ProgramId,
        input_base64: Base64Bytes,
        options: Option<ExecuteOptions>,
    ) -> RpcResult<ExecuteResult>;

    /// Who attests the program's calls, and how many signatures a receipt needs.
    #[method(name = "committee")]
    async fn committee(&self, program_id: ProgramId) -> RpcResult<crate::committee::Committee>;
}

/// `state_*`: a program's committed key-value state, its Merkle root and proofs.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "state"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "state"))]
pub trait StateApi {
    /// The committed value of one key (None when absent), at the program's current height.
    #[method(name = "get")]
    async fn get(&self, program_id: ProgramId, key_base64: Base64Bytes) -> RpcResult<StateValue>;

    /// The program's current sparse-Merkle state root and the height it belongs to.
    #[method(name = "root")]
    async fn root(&self, program_id: ProgramId) -> RpcResult<StateRoot>;

    /// Inclusion or absence proof; check it with `onvm_rpc_api::smt::verify_proof`.
    #[method(name = "proof")]
    async fn proof(&self, program_id: ProgramId, key_base64: Base64Bytes) -> RpcResult<StateProof>;
}

/// `receipt_*`: execution receipts.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "receipt"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "receipt"))]
pub trait ReceiptApi {
    /// One receipt by id, with the executor's signature and, for committee programs, the
    /// members' aggregated attestation.
    #[method(name = "get")]
    async fn get(&self, receipt_id: ReceiptId) -> RpcResult<SignedReceipt>;

    /// A program's receipts, newest first; page with `before_height`.
    #[method(name = "list")]
    async fn list(
        &self,
        program_id: ProgramId,
        before_height: Option<u64>,
        limit: Option<u32>,
    ) -> RpcResult<ReceiptPage>;

    /// Checks a receipt against its program's committee (from this node's catalog): id,
    /// executor signature, and the aggregate signature of a threshold of members.
    #[method(name = "verify")]
    async fn verify(
        &self,
        receipt: SignedReceipt,
    ) -> RpcResult<crate::committee::ReceiptVerification>;

    /// Committed receipts as this node stores them (its own and replicated), for one program or
    /// all, from DAG arrival sequence `from_seq` (1 = all history; default: only new ones);
    /// closes with `lagged` and a resume cursor like the other subscriptions.
    #[subscription(name = "subscribe" => "receipt", unsubscribe = "unsubscribe", item = crate::committee::ReceiptStreamItem)]
    async fn subscribe_receipts(
        &self,
        program_id: Option<ProgramId>,
        from_seq: Option<u64>,
    ) -> SubscriptionResult;

    /// The input of the call a receipt commits (for audits: replay it and compare).
    #[method(name = "input")]
    async fn input(&self, receipt_id: ReceiptId) -> RpcResult<Base64Bytes>;

    /// Disagreements this node recorded while attesting `program_id`'s calls.
    #[method(name = "evidence")]
    async fn evidence(&self, program_id: ProgramId) -> RpcResult<Vec<crate::committee::Evidence>>;
}

/// `job_*`: durable jobs with retries, timeouts, cancellation and live events.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "job"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "job"))]
pub trait JobApi {
    /// Queues a job; acknowledged only once durable. Idempotent by `request_id`.
    #[method(name = "submit", with_extensions)]
    async fn submit(&self, request: SubmitJob) -> RpcResult<SubmitResult>;

    /// A job's status, attempts, timestamps and, once finished, its outcome.
    #[method(name = "status")]
    async fn status(&self, job_id: JobId) -> RpcResult<JobInfo>;

    /// A completed job's output (inline when small, always by blob id).
    #[method(name = "output")]
    async fn output(&self, job_id: JobId) -> RpcResult<JobOutput>;

    /// Cancels a pending or running job; idempotent.
    #[method(name = "cancel", with_extensions)]
    async fn cancel(&self, job_id: JobId) -> RpcResult<JobInfo>;

    /// Jobs ordered by id, optionally filtered by status and program.
    #[method(name = "list")]
    async fn list(
        &self,
        filter: Option<JobFilter>,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> RpcResult<JobPage>;

    /// What the program logged, per attempt.
    #[method(name = "logs")]
    async fn logs(&self, job_id: JobId) -> RpcResult<JobLogs>;

    /// One job's events from `from_seq` (default: its whole history), then live; closes with
    /// `finished` after a terminal status, or `lagged` with a resume cursor.
    #[subscription(name = "subscribe" => "event", unsubscribe = "unsubscribe", item = crate::jobs::JobStreamItem)]
    async fn subscribe_job(&self, job_id: JobId, from_seq: Option<u64>) -> SubscriptionResult;

    /// All job events matching `filter` from `from_seq` (default: only new ones).
    #[subscription(name = "subscribe_all" => "feed", unsubscribe = "unsubscribe_all", item = crate::jobs::JobStreamItem)]
    async fn subscribe_feed(
        &self,
        filter: Option<JobFilter>,
        from_seq: Option<u64>,
    ) -> SubscriptionResult;
}

/// `peer_*`: the node's view of the network.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "peer"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "peer"))]
pub trait PeerApi {
    /// Dials a node by its ticket (iroh endpoint ticket) and exchanges a hello.
    #[method(name = "connect")]
    async fn connect(&self, ticket: String) -> RpcResult<PeerInfo>;

    /// Known peers with connection type, latency and last contact.
    #[method(name = "list")]
    async fn list(&self) -> RpcResult<Vec<PeerInfo>>;
}

/// `dag_*`: the signed operation log.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "dag"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "dag"))]
pub trait DagApi {
    /// The current heads and the number of nodes held.
    #[method(name = "heads")]
    async fn heads(&self) -> RpcResult<crate::dag::DagHeads>;

    /// One DAG node by id (64 hex).
    #[method(name = "get")]
    async fn get(&self, id: crate::Hash32) -> RpcResult<crate::dag::DagNode>;

    /// Nodes as this node stores them, from arrival sequence `from_seq` (1 = the whole
    /// history; default: only new ones); closes with `lagged` and a resume cursor.
    #[subscription(name = "subscribe" => "node", unsubscribe = "unsubscribe", item = crate::dag::DagStreamItem)]
    async fn subscribe_nodes(&self, from_seq: Option<u64>) -> SubscriptionResult;
}

/// `token_*`: API tokens for clients other than the node operator's CLI (which uses the
/// node's cookie file). Scope `admin`.
#[cfg_attr(not(feature = "client"), rpc(server, namespace = "token"))]
#[cfg_attr(feature = "client", rpc(server, client, namespace = "token"))]
pub trait TokenApi {
    /// Creates a token; the answer is the only place its secret ever appears.
    #[method(name = "create")]
    async fn create(
        &self,
        request: crate::auth::TokenRequest,
    ) -> RpcResult<crate::auth::CreatedToken>;

    /// Every live (unexpired, unrevoked) token, without secrets.
    #[method(name = "list")]
    async fn list(&self) -> RpcResult<Vec<crate::auth::TokenInfo>>;

    /// Revokes a token by id; true if it existed. It stops working at once, also on
    /// connections already open with it.
    #[method(name = "revoke")]
    async fn revoke(&self, id: String) -> RpcResult<bool>;
}

/// `rpc.discover`: the node's API described for tools (OpenRPC), from the same table the
/// server checks scopes and parameters with (`methods::METHODS`) and these traits' docs.
#[cfg_attr(
    not(feature = "client"),
    rpc(server, namespace = "rpc", namespace_separator = ".")
)]
#[cfg_attr(
    feature = "client",
    rpc(server, client, namespace = "rpc", namespace_separator = ".")
)]
pub trait DiscoverApi {
    /// An OpenRPC 1.2 document of every method this node serves: parameters, result, the
    /// scope a token needs (`x-onvm-scope`) and whether it opens a subscription.
    #[method(name = "discover")]
    async fn discover(&self) -> RpcResult<serde_json::Value>;
}
