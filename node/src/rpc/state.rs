//! `state_*`: a program's key-value state, its root and Merkle proofs.

use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::ProgramId;
use onvm_rpc_api::api::StateApiServer;
use onvm_rpc_api::program::{StateProof, StateRoot, StateValue};
use onvm_rpc_api::types::Base64Bytes;

use super::Handlers;
use super::errors::rpc;

#[async_trait]
impl StateApiServer for Handlers {
    async fn get(&self, program_id: ProgramId, key_base64: Base64Bytes) -> RpcResult<StateValue> {
        self.ctx
            .programs
            .state_get(program_id, key_base64.0)
            .await
            .map_err(rpc)
    }

    async fn root(&self, program_id: ProgramId) -> RpcResult<StateRoot> {
        let info = self.ctx.programs.info(program_id).await.map_err(rpc)?;
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
            .map_err(rpc)
    }
}
