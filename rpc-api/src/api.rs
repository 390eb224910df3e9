//! The JSON-RPC traits. The node implements the generated `*Server` traits; with the `client`
//! feature, jsonrpsee also generates typed `*Client` extension traits for any jsonrpsee client.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;

use crate::ids::{BlobId, UploadId};
use crate::types::{
    Base64Bytes, BlobChunk, BlobPage, BlobStat, Health, Metrics, NodeInfo, UploadStatus,
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
    #[method(name = "upload_begin")]
    async fn upload_begin(&self, size: u64, mime: Option<String>) -> RpcResult<UploadStatus>;

    /// Appends a chunk at `offset`, which must equal the bytes received so far. Re-sending the
    /// last chunk after a lost reply is detected and accepted (see docs/RPC.md).
    #[method(name = "upload_append")]
    async fn upload_append(
        &self,
        upload_id: UploadId,
        offset: u64,
        data_base64: Base64Bytes,
    ) -> RpcResult<UploadStatus>;

    /// Where an upload stands: resume from `received`.
    #[method(name = "upload_status")]
    async fn upload_status(&self, upload_id: UploadId) -> RpcResult<UploadStatus>;

    /// Completes an upload once all bytes arrived; optionally checks the expected id.
    #[method(name = "upload_finish")]
    async fn upload_finish(
        &self,
        upload_id: UploadId,
        expected_id: Option<BlobId>,
    ) -> RpcResult<BlobStat>;

    /// Drops an upload session and its partial data. Idempotent.
    #[method(name = "upload_abort")]
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
