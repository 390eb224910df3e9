//! `blob_*`: content-addressed blobs, inline and chunked uploads.

use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::api::BlobApiServer;
use onvm_rpc_api::types::{Base64Bytes, BlobChunk, BlobPage, BlobStat, UploadStatus};
use onvm_rpc_api::{BlobId, UploadId};

use super::errors::rpc;
use super::{Handlers, auth};

#[async_trait]
impl BlobApiServer for Handlers {
    async fn put(&self, data_base64: Base64Bytes, mime: Option<String>) -> RpcResult<BlobStat> {
        self.ctx.blobs.put(data_base64.0, mime).await.map_err(rpc)
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
            .map_err(rpc)
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
            .map_err(rpc)
    }

    async fn upload_status(&self, upload_id: UploadId) -> RpcResult<UploadStatus> {
        self.ctx.blobs.upload_status(upload_id).await.map_err(rpc)
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
            .map_err(rpc)
    }

    async fn upload_abort(&self, upload_id: UploadId) -> RpcResult<bool> {
        self.ctx.blobs.upload_abort(upload_id).await.map_err(rpc)
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
            .map_err(rpc)
    }

    async fn stat(&self, id: BlobId) -> RpcResult<BlobStat> {
        let blobs = &self.ctx.blobs;
        self.ctx.with_blob(id, || blobs.stat(id)).await.map_err(rpc)
    }

    async fn list(&self, cursor: Option<String>, limit: Option<u32>) -> RpcResult<BlobPage> {
        self.ctx.blobs.list(cursor, limit).await.map_err(rpc)
    }
}
