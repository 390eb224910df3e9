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
        let grant = ext.get::<auth::Grant>();
        let client = grant.and_then(|g| g.client.clone());
        let status = self
            .ctx
            .blobs
            .upload_begin(size, mime, client)
            .await
            .map_err(rpc)?;
        if let Some(grant) = grant {
            let (store, key, owner) = (
                self.ctx.store.clone(),
                format!("upload:{}", status.upload_id),
                auth::owner(grant),
            );
            super::errors::blocking(move || store.set_owner(&key, &owner)).await?;
        }
        Ok(status)
    }

    async fn upload_append(
        &self,
        ext: &jsonrpsee::Extensions,
        upload_id: UploadId,
        offset: u64,
        data_base64: Base64Bytes,
    ) -> RpcResult<UploadStatus> {
        self.own_upload(ext, &upload_id).await?;
        self.ctx
            .blobs
            .upload_append(upload_id, offset, data_base64.0)
            .await
            .map_err(rpc)
    }

    async fn upload_status(
        &self,
        ext: &jsonrpsee::Extensions,
        upload_id: UploadId,
    ) -> RpcResult<UploadStatus> {
        self.own_upload(ext, &upload_id).await?;
        self.ctx.blobs.upload_status(upload_id).await.map_err(rpc)
    }

    async fn upload_finish(
        &self,
        ext: &jsonrpsee::Extensions,
        upload_id: UploadId,
        expected_id: Option<BlobId>,
    ) -> RpcResult<BlobStat> {
        self.own_upload(ext, &upload_id).await?;
        self.ctx
            .blobs
            .upload_finish(upload_id, expected_id)
            .await
            .map_err(rpc)
    }

    async fn upload_abort(
        &self,
        ext: &jsonrpsee::Extensions,
        upload_id: UploadId,
    ) -> RpcResult<bool> {
        self.own_upload(ext, &upload_id).await?;
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

impl Handlers {
    /// Refuses a caller that is neither the upload's owner nor the operator.
    async fn own_upload(&self, ext: &jsonrpsee::Extensions, id: &UploadId) -> RpcResult<()> {
        self.own(ext, format!("upload:{id}"), "upload").await
    }

    /// Refuses a caller that is neither the owner of `key` (`job:<id>`, `upload:<id>`) nor the
    /// operator (`auth::may_touch`). Without a grant (in-process calls) nothing is refused.
    pub(super) async fn own(
        &self,
        ext: &jsonrpsee::Extensions,
        key: String,
        what: &str,
    ) -> RpcResult<()> {
        let Some(grant) = ext.get::<auth::Grant>().cloned() else {
            return Ok(());
        };
        let store = self.ctx.store.clone();
        let lookup = key.clone();
        let owner = super::errors::blocking(move || store.owner(&lookup)).await?;
        if auth::may_touch(&grant, owner.as_deref()) {
            return Ok(());
        }
        Err(onvm_rpc_api::error::rpc_error(
            onvm_rpc_api::error::FORBIDDEN,
            "not_owner",
            format!(
                "this {what} belongs to another client: only the API token (or, without one, the address) that created it on this node, or an admin, may touch it"
            ),
            serde_json::json!({"key": key}),
        ))
    }
}
