//! `program_*`: deploy, inspect and call programs (writing calls go to the program's sequencer).

use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::ProgramId;
use onvm_rpc_api::api::ProgramApiServer;
use onvm_rpc_api::program::{
    DeployRequest, DeployResult, ExecuteOptions, ExecuteResult, ProgramInfo, ProgramPage,
};
use onvm_rpc_api::types::Base64Bytes;

use super::Handlers;
use super::errors::rpc;

#[async_trait]
impl ProgramApiServer for Handlers {
    async fn committee(
        &self,
        program_id: ProgramId,
    ) -> RpcResult<onvm_rpc_api::committee::Committee> {
        let info = self.ctx.programs.info(program_id).await.map_err(rpc)?;
        Ok(info.manifest.manifest.committee())
    }

    async fn deploy(&self, request: DeployRequest) -> RpcResult<DeployResult> {
        self.ctx.programs.deploy(request).await.map_err(rpc)
    }

    async fn info(&self, program_id: ProgramId) -> RpcResult<ProgramInfo> {
        self.ctx.programs.info(program_id).await.map_err(rpc)
    }

    async fn list(&self, cursor: Option<String>, limit: Option<u32>) -> RpcResult<ProgramPage> {
        self.ctx.programs.list(cursor, limit).await.map_err(rpc)
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
            && let Some(home) = self.calls_elsewhere(program_id).await?
        {
            return self
                .execute_with_failover(program_id, home, input_base64, options)
                .await;
        }
        self.ctx
            .programs
            .execute(program_id, input_base64.0, options)
            .await
            .map_err(rpc)
    }
}
