//! The other side of `/onvm/call/1`: calls other nodes forward here (as the home, or as a
//! member taking over), attestation requests from sequencers, and this node's own requests to
//! committee members. Only announced nodes of this network are served.

use jsonrpsee::types::ErrorObjectOwned;
use onvm_rpc_api::ProgramId;
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
    if let Err(refusal) = admit_caller(ctx, from, &call).await {
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
        ForwardedCall::Attest {
            receipt,
            input_base64,
        } => attest_for(ctx, from, *receipt, input_base64.0).await,
        ForwardedCall::ExecuteTakeover {
            program_id,
            input_base64,
            options,
        } => execute_reply(
            ctx.programs
                .execute_takeover(program_id, input_base64.0, options)
                .await,
        ),
        ForwardedCall::VoteAt { program_id, height } => {
            match ctx.programs.vote_report(program_id, height).await {
                Ok((applied_height, vote)) => ForwardedReply::Vote {
                    applied_height,
                    vote: vote.map(Box::new),
                },
                // A member that has not seen the program yet has signed nothing for it:
                // a true answer, and one a sequencer right after a deploy needs.
                Err(ProgramError::NotFound(_)) => ForwardedReply::Vote {
                    applied_height: 0,
                    vote: None,
                },
                Err(e) => forwarded_error(rpc(e)),
            }
        }
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
/// its announcement arrived); and the member-only requests (`attest`, `vote_at`) only from the
/// members of that program's committee. Accepting nodes forward calls and jobs; members attest.
async fn admit_caller(
    ctx: &NodeContext,
    from: iroh::EndpointId,
    call: &ForwardedCall,
) -> Result<(), String> {
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
    let program = match call {
        ForwardedCall::Attest { receipt, .. } => receipt.program_id,
        ForwardedCall::VoteAt { program_id, .. } => *program_id,
        _ => return Ok(()),
    };
    // An unknown program is pulled by the attest path; its own checks then apply.
    match ctx.programs.info(program).await {
        Ok(info)
            if !info
                .manifest
                .manifest
                .committee
                .iter()
                .any(|m| m.endpoint_id == caller) =>
        {
            Err(format!("{from} is not a member of {program}'s committee"))
        }
        _ => Ok(()),
    }
}

/// A member's answer to a proposal: signs, or says why not. A replica that is behind, or has
/// not seen the program yet (a call right after its deploy), pulls from the sequencer, which
/// holds both, and tries again (the proposal's parent call may still be in flight).
async fn attest_for(
    ctx: &NodeContext,
    from: iroh::EndpointId,
    receipt: onvm_rpc_api::program::ExecutionReceipt,
    input: Vec<u8>,
) -> ForwardedReply {
    use crate::programs::AttestError;
    let sequencer = onvm_rpc_api::Hash32(*from.as_bytes());
    // The proposal usually arrives a moment before the previous call's commit does: pull it
    // at once, and back off only if it is still missing.
    let mut pause = std::time::Duration::from_millis(2);
    for _ in 0..20 {
        match ctx.programs.attest(receipt.clone(), input.clone()).await {
            Ok(signature) => {
                return ForwardedReply::Attested {
                    signature: onvm_rpc_api::HexBytes(signature),
                };
            }
            Err(
                AttestError::Behind { .. }
                | AttestError::Program(crate::programs::ProgramError::NotFound(_)),
            ) => match ctx.net.peers().sync_from(sequencer).await {
                Ok(added) if added > 0 => {}
                other => {
                    if let Err(e) = other {
                        tracing::debug!("pulling from the sequencer before attesting: {e}");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
            },
            Err(AttestError::Program(e)) => return forwarded_error(rpc(e)),
            Err(e) => {
                return ForwardedReply::Error {
                    code: codes::CONFLICT,
                    message: e.to_string(),
                    data: None,
                };
            }
        }
    }
    ForwardedReply::Error {
        code: codes::UNAVAILABLE,
        message: "this replica did not catch up with the proposal's height".into(),
        data: None,
    }
}

/// One request to a committee member. A member this node failed to reach recently
/// (`net.suspect_ms`) is not waited for: a dead member would otherwise cost every call a dial
/// timeout. Another node's report is not enough (a false one would cost a vote).
async fn ask_member(
    ctx: &NodeContext,
    member: onvm_rpc_api::Hash32,
    call: &ForwardedCall,
) -> Result<ForwardedReply, String> {
    let peers = ctx.net.peers();
    if peers.failed_here(&member) {
        return Err("did not answer recently (net.suspect_ms)".into());
    }
    match peers.forward(member, call).await {
        Ok(reply) => {
            peers.clear_suspect(&member);
            Ok(reply)
        }
        Err(e) => {
            peers.suspect(member);
            Err(e.to_string())
        }
    }
}

/// Sends proposals to committee members over `/onvm/call/1`.
pub(super) struct CommitteeLink(pub(super) std::sync::Weak<NodeContext>);

impl crate::programs::Attestor for CommitteeLink {
    fn request(
        &self,
        member: onvm_rpc_api::Hash32,
        proposed: onvm_rpc_api::program::ExecutionReceipt,
        input: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or("this node is shutting down")?;
            let call = ForwardedCall::Attest {
                receipt: Box::new(proposed),
                input_base64: input.into(),
            };
            match ask_member(&ctx, member, &call).await? {
                ForwardedReply::Attested { signature } => Ok(signature.0),
                ForwardedReply::Error { message, .. } => Err(message),
                other => Err(format!("unexpected reply {other:?}")),
            }
        })
    }

    fn vote_at(
        &self,
        member: onvm_rpc_api::Hash32,
        program: ProgramId,
        height: u64,
    ) -> crate::programs::BoxFuture<Result<(u64, Option<crate::store::Vote>), String>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or("this node is shutting down")?;
            let call = ForwardedCall::VoteAt {
                program_id: program,
                height,
            };
            match ask_member(&ctx, member, &call).await? {
                ForwardedReply::Vote {
                    applied_height,
                    vote,
                } => Ok((applied_height, vote.map(|v| *v))),
                ForwardedReply::Error { message, .. } => Err(message),
                other => Err(format!("unexpected reply {other:?}")),
            }
        })
    }

    fn catch_up(&self, member: onvm_rpc_api::Hash32) -> crate::programs::BoxFuture<()> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            if let Some(ctx) = ctx
                && let Err(e) = ctx.net.peers().sync_from(member).await
            {
                tracing::debug!(%member, "pulling a member that is ahead: {e}");
            }
        })
    }
}
