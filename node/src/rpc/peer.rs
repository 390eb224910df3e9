//! `peer_*`: dial other nodes by ticket, and list the known ones.

use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::api::PeerApiServer;
use onvm_rpc_api::types::PeerInfo;

use super::Handlers;
use super::errors::rpc;

#[async_trait]
impl PeerApiServer for Handlers {
    async fn connect(&self, ticket: String) -> RpcResult<PeerInfo> {
        self.ctx.net.peers().connect(&ticket).await.map_err(rpc)
    }

    async fn list(&self) -> RpcResult<Vec<PeerInfo>> {
        Ok(self.ctx.net.peers().list().await)
    }
}
