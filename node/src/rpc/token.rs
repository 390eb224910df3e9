//! `token_*`: API tokens (scope admin).

use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::api::TokenApiServer;
use onvm_rpc_api::auth::{CreatedToken, TokenInfo, TokenRequest};

use super::Handlers;
use super::errors::blocking;

#[async_trait]
impl TokenApiServer for Handlers {
    async fn create(&self, request: TokenRequest) -> RpcResult<CreatedToken> {
        let tokens = self.tokens.clone();
        let created = blocking(move || tokens.create(request, crate::util::now_ms())).await?;
        tracing::info!(token = %created.info.id, scopes = ?created.info.scopes, "API token created");
        Ok(created)
    }

    async fn list(&self) -> RpcResult<Vec<TokenInfo>> {
        Ok(self.tokens.list(crate::util::now_ms()))
    }

    async fn revoke(&self, id: String) -> RpcResult<bool> {
        let tokens = self.tokens.clone();
        blocking(move || tokens.revoke(&id)).await
    }
}
