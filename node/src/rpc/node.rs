//! `node_*`: who this node is, whether it is ready, and its counters.

use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::api::{DiscoverApiServer, NodeApiServer};
use onvm_rpc_api::types::{Health, Metrics, NodeInfo};

use super::Handlers;

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
impl DiscoverApiServer for Handlers {
    async fn discover(&self) -> RpcResult<serde_json::Value> {
        static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        Ok(DOCUMENT
            .get_or_init(|| onvm_rpc_api::methods::openrpc(env!("CARGO_PKG_VERSION")))
            .clone())
    }
}
