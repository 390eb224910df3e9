//! The other side of `/onvm/call/1`: calls other nodes forward here (as the home, or as a
//! member taking over), attestation requests from sequencers, and this node's own requests to
//! committee members. Only announced nodes of this network are served.

use jsonrpsee::types::ErrorObjectOwned;
use onvm_rpc_api::error as codes;
use onvm_rpc_api::jobs::SubmitJob;
use onvm_rpc_api::program::ExecuteResult;
use serde_json::json;

use super::errors::rpc;
use crate::net::{CallHandler, ForwardedCall, ForwardedReply};
use crate::node::NodeContext;
use crate::programs::ProgramError;

pub(super) fn execute_reply(result: Result<ExecuteResult, ProgramError>) -> ForwardedReply {
    match result {
        Ok(result) => ForwardedReply::Executed {
            result: Box::new(result),
        },
        Err(e) => forwarded_error(rpc(e)),
    }
}

pub(super) fn forwarded_error(e: ErrorObjectOwned) -> ForwardedReply {
    ForwardedReply::Error {
        code: e.code(),
        message: e.message().to_string(),
        data: e.data().and_then(|d| serde_json::from_str(d.get()).ok()),
    }
}

/// Runs calls other nodes forward to this node (the home of their program). Only local
/// execution: a forwarded call is never forwarded again. Weak: the network layer that holds
/// this handler is itself owned by the node context.
pub(super) struct ForwardedCalls(pub(super) std::sync::Weak<NodeContext>);

impl CallHandler for ForwardedCalls {
    fn handle(
        &self,
        from: iroh::EndpointId,
        call: ForwardedCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<ForwardedReply>> + Send>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            // No context: the node has stopped.
            let ctx = ctx?;
            let reply = reply_to(&ctx, from, call).await;
            // An error while this node shuts down is our stopping (a committee that stopped
            // before deciding), not the call's answer: the caller tries the next member.
            if matches!(reply, ForwardedReply::Error { .. }) && ctx.is_shutting_down() {
                tracing::debug!(%from, "forwarded call cut short by shutdown: left unanswered");
                return None;
            }
            Some(reply)
        })
    }
}

/// Runs one forwarded call from `from` (after checking the caller may make it).
async fn reply_to(
    ctx: &NodeContext,
    from: iroh::EndpointId,
    call: ForwardedCall,
) -> ForwardedReply {
    tracing::debug!(%from, "forwarded call");
    if let Err(refusal) = admit_caller(ctx, from).await {
        tracing::debug!(%from, "forwarded call refused: {refusal}");
        return ForwardedReply::Error {
            code: codes::FORBIDDEN,
            message: refusal,
            data: Some(json!({"kind": "forbidden"})),
        };
    }
    match call {
        ForwardedCall::Execute {
            program_id,
            input_base64,
            options,
        } => execute_reply(
            ctx.programs
                .execute(program_id, input_base64.0, options)
                .await,
        ),
        ForwardedCall::SubmitJob { request } => submit_for(ctx, request, false).await,
        ForwardedCall::SubmitJobTakeover { request } => submit_for(ctx, request, true).await,
        ForwardedCall::ExecuteTakeover {
            program_id,
            input_base64,
            options,
        } => execute_reply(
            ctx.programs
                .execute(program_id, input_base64.0, options)
                .await,
        ),
        ForwardedCall::CancelJob { job_id } => match ctx.jobs.cancel(job_id).await {
            Ok(job) => ForwardedReply::Cancelled { job: Box::new(job) },
            Err(e) => forwarded_error(rpc(e)),
        },
    }
}

/// Accepts a job another node forwarded, as the home or (`takeover`) as a member standing in
/// for it. An input blob may live only on the node that accepted the job: fetched first.
async fn submit_for(ctx: &NodeContext, request: SubmitJob, takeover: bool) -> ForwardedReply {
    if let Some(blob) = request.input_blob {
        let blobs = ctx.blobs.clone();
        if let Err(e) = ctx.with_blob(blob, || blobs.stat(blob)).await {
            return forwarded_error(rpc(e));
        }
    }
    let submitted = if takeover {
        ctx.jobs.submit_takeover(request).await
    } else {
        ctx.jobs.submit(request).await
    };
    match submitted {
        Ok(result) => ForwardedReply::Submitted {
            result: Box::new(result),
        },
        Err(e) => forwarded_error(rpc(e)),
    }
}

/// Who may use `/onvm/call/1`: only nodes announced in this node's DAG, which is bound to this
/// network (a caller not seen yet is pulled from once: a node that just joined may call before
/// its announcement arrived). Accepting nodes forward calls and jobs.
async fn admit_caller(ctx: &NodeContext, from: iroh::EndpointId) -> Result<(), String> {
    let caller = onvm_rpc_api::Hash32(*from.as_bytes());
    let announced = |dag: crate::dag_log::DagLog| async move {
        tokio::task::spawn_blocking(move || dag.is_announced(&caller))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    };
    if !announced(ctx.dag.clone()).await? {
        if let Err(e) = ctx.net.peers().sync_from(caller).await {
            tracing::debug!(%from, "pulling an unknown caller's DAG: {e}");
        }
        if !announced(ctx.dag.clone()).await? {
            return Err(format!(
                "{from} is not an announced node of network `{}`",
                ctx.config.node.network_id
            ));
        }
    }
    Ok(())
}
