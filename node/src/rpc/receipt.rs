//! `receipt_*`: receipts, their verification, the call inputs auditors replay, and a live feed
//! of the receipts this node applied.

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, async_trait};
use onvm_rpc_api::api::ReceiptApiServer;
use onvm_rpc_api::committee::{Evidence, ReceiptStreamItem, ReceiptVerification};
use onvm_rpc_api::dag::DagPayload;
use onvm_rpc_api::error::{self as codes, rpc_error};
use onvm_rpc_api::program::{ReceiptPage, SignedReceipt};
use onvm_rpc_api::types::Base64Bytes;
use onvm_rpc_api::{ProgramId, ReceiptId};
use serde_json::json;

use super::Handlers;
use super::errors::rpc;
use super::streams::{Close, Step};

#[async_trait]
impl ReceiptApiServer for Handlers {
    async fn get(&self, receipt_id: ReceiptId) -> RpcResult<SignedReceipt> {
        self.ctx.programs.receipt(receipt_id).await.map_err(rpc)
    }

    async fn list(
        &self,
        program_id: ProgramId,
        before_height: Option<u64>,
        limit: Option<u32>,
    ) -> RpcResult<ReceiptPage> {
        self.ctx
            .programs
            .receipts(program_id, before_height, limit)
            .await
            .map_err(rpc)
    }

    async fn verify(&self, receipt: SignedReceipt) -> RpcResult<ReceiptVerification> {
        self.ctx.programs.verify_receipt(receipt).await.map_err(rpc)
    }

    async fn subscribe_receipts(
        &self,
        pending: PendingSubscriptionSink,
        program_id: Option<ProgramId>,
        from_seq: Option<u64>,
    ) -> jsonrpsee::core::SubscriptionResult {
        // Refused payloads are stored in the DAG too: stream only receipts this node applied
        // (one indexed read per receipt, so a lying peer's receipts never reach a dApp).
        let programs = self.ctx.programs.clone();
        let pick = move |seq, node: onvm_rpc_api::dag::DagNode| match node.body.payload {
            DagPayload::ExecutionCommitted { receipt, .. }
                if program_id.is_none_or(|p| p == receipt.receipt.program_id)
                    && programs.is_applied(&receipt.id) =>
            {
                Step::Send(ReceiptStreamItem::Receipt { seq, receipt })
            }
            _ => Step::Skip,
        };
        let close = Close {
            lagged: |seq| ReceiptStreamItem::Closed {
                reason: "lagged".into(),
                resume_from_seq: seq,
            },
            finished: |seq| ReceiptStreamItem::Closed {
                reason: "finished".into(),
                resume_from_seq: seq,
            },
        };
        self.serve_dag(pending, from_seq, pick, close).await
    }

    async fn input(&self, receipt_id: ReceiptId) -> RpcResult<Base64Bytes> {
        self.ctx
            .programs
            .call_input(receipt_id)
            .await
            .map_err(rpc)?
            .map(Base64Bytes)
            .ok_or_else(|| {
                rpc_error(
                    codes::NOT_FOUND,
                    "receipt_not_found",
                    format!("no call input for receipt {receipt_id} on this node"),
                    json!({"receipt_id": receipt_id}),
                )
            })
    }

    async fn evidence(&self, program_id: ProgramId) -> RpcResult<Vec<Evidence>> {
        self.ctx.programs.evidence(program_id).await.map_err(rpc)
    }
}
