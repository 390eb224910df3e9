//! `dag_*`: the operation DAG: heads, single nodes, and a live feed in arrival order.

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::Hash32;
use onvm_rpc_api::api::DagApiServer;
use onvm_rpc_api::dag::{DagHeads, DagNode, DagStreamItem};
use onvm_rpc_api::error::{self as codes, rpc_error};
use serde_json::json;

use super::Handlers;
use super::errors::blocking;
use super::streams::{Close, DagFeed, Step, follow};

#[async_trait]
impl DagApiServer for Handlers {
    async fn heads(&self) -> RpcResult<DagHeads> {
        let dag = self.ctx.dag.clone();
        blocking(move || dag.heads()).await
    }

    async fn get(&self, id: Hash32) -> RpcResult<DagNode> {
        let dag = self.ctx.dag.clone();
        blocking(move || dag.node(&id)).await?.ok_or_else(|| {
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
        let pick = |seq, node: DagNode| {
            Step::Send(DagStreamItem::Node {
                seq,
                id: node.id(),
                node: Box::new(node),
            })
        };
        let close = Close {
            lagged: |seq| DagStreamItem::Closed {
                reason: "lagged".into(),
                resume_from_seq: seq,
            },
            finished: |seq| DagStreamItem::Closed {
                reason: "finished".into(),
                resume_from_seq: seq,
            },
        };
        self.serve_dag(pending, from_seq, pick, close).await
    }
}

impl Handlers {
    /// Accepts a subscription over the DAG log from `from_seq` (default: the next node to
    /// arrive) and streams what `pick` makes of each node, with the lag/resume contract.
    pub(super) async fn serve_dag<T: serde::Serialize>(
        &self,
        pending: PendingSubscriptionSink,
        from_seq: Option<u64>,
        pick: impl FnMut(u64, DagNode) -> Step<T> + Send,
        close: Close<T>,
    ) -> jsonrpsee::core::SubscriptionResult {
        let from = match from_seq {
            Some(s) => s.max(1),
            None => {
                let dag = self.ctx.dag.clone();
                match blocking(move || dag.last_seq()).await {
                    Ok(last) => last + 1,
                    Err(e) => {
                        pending.reject(e).await;
                        return Ok(());
                    }
                }
            }
        };
        let feed = DagFeed::new(self.ctx.dag.clone());
        let sink = pending.accept().await?;
        follow(
            sink,
            feed,
            from,
            self.lag(),
            pick,
            close,
            self.ctx.counters.clone(),
        )
        .await;
        Ok(())
    }
}
