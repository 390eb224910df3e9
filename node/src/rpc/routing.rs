//! Where a call goes: writing calls and jobs for a program this node does not sequence are
//! forwarded to its home, or, when the home does not answer, to the next live member of its
//! committee, which takes over. The forwarded reply becomes this node's RPC answer.

use jsonrpsee::core::RpcResult;
use jsonrpsee::types::ErrorObjectOwned;
use onvm_rpc_api::ProgramId;
use onvm_rpc_api::error::{self as codes, rpc_error};
use onvm_rpc_api::jobs::{SubmitJob, SubmitResult};
use onvm_rpc_api::program::{ExecuteOptions, ExecuteResult};
use onvm_rpc_api::types::Base64Bytes;
use serde_json::json;

use super::Handlers;
use super::errors::rpc;
use crate::consensus::routing::{Hop, Role, sequencer_route};
use crate::net::{ForwardedCall, ForwardedReply};
use crate::programs::ProgramError;

impl Handlers {
    /// The home of `program` when it is another node (jobs for it are forwarded there).
    pub(super) async fn elsewhere(
        &self,
        program: ProgramId,
    ) -> RpcResult<Option<onvm_rpc_api::Hash32>> {
        not_home(self.ctx.programs.check_home(program).await)
    }

    /// The home of `program` when a writing call cannot run here (forwarded): None on its
    /// home and, for a PBFT committee, on any member.
    pub(super) async fn calls_elsewhere(
        &self,
        program: ProgramId,
    ) -> RpcResult<Option<onvm_rpc_api::Hash32>> {
        not_home(self.ctx.programs.check_accepts_calls(program).await)
    }

    /// Forwards a call to the program's home and, once it answers, pulls the home's new DAG
    /// nodes, so the call's receipt, state and job are visible on this node when it returns.
    pub(super) async fn forward(
        &self,
        home: onvm_rpc_api::Hash32,
        call: &ForwardedCall,
    ) -> RpcResult<ForwardedReply> {
        let peers = self.ctx.net.peers();
        let reply = peers
            .forward(home, call)
            .await
            .map_err(|e| home_unreachable(home, &e))?;
        self.finish_forward(home, reply).await
    }

    /// Turns a forwarded reply into the RPC result, after pulling the sender's DAG.
    async fn finish_forward(
        &self,
        from: onvm_rpc_api::Hash32,
        reply: ForwardedReply,
    ) -> RpcResult<ForwardedReply> {
        let peers = self.ctx.net.peers();
        if let ForwardedReply::Error {
            code,
            message,
            data,
        } = reply
        {
            return Err(ErrorObjectOwned::owned(code, message, data));
        }
        if let Err(e) = peers.sync_from(from).await {
            tracing::debug!(%from, "pulling the DAG after a forwarded call: {e}");
        }
        Ok(reply)
    }

    /// A writing call, sent to the first live member of the program's committee: the home,
    /// unless it failed recently (`net.suspect_ms`). When the node it was sent to does not
    /// answer (down, or the connection broke mid-call), the call goes to the next member in
    /// rank order, which takes over as sequencer (this node itself, if it is that member). The
    /// retry carries the same request id, and a sequencer finishes any proposal its
    /// predecessor left signed before it runs anything, so a call that did commit on the
    /// failed node is answered from its receipt instead of running twice.
    pub(super) async fn execute_with_failover(
        &self,
        program_id: ProgramId,
        home: onvm_rpc_api::Hash32,
        input_base64: Base64Bytes,
        options: ExecuteOptions,
    ) -> RpcResult<ExecuteResult> {
        let reply = self
            .to_sequencer(program_id, home, |member| {
                let (input_base64, options) = (input_base64.clone(), options.clone());
                match member {
                    Role::Home => ForwardedCall::Execute {
                        program_id,
                        input_base64,
                        options,
                    },
                    Role::Takeover => ForwardedCall::ExecuteTakeover {
                        program_id,
                        input_base64,
                        options,
                    },
                }
            })
            .await?;
        match reply {
            Some(reply) => executed(reply),
            None => {
                tracing::info!(%program_id, "the members ranked before this node are down: sequencing here");
                self.ctx
                    .programs
                    .execute(program_id, input_base64.0, options)
                    .await
                    .map_err(rpc)
            }
        }
    }

    /// A job for a program this node does not sequence: to its home, or (job failover) to the
    /// next live member that takes over, exactly like a writing call. The job id is derived
    /// from the program and request id, so a resubmission to any node finds the same job.
    pub(super) async fn submit_with_failover(
        &self,
        home: onvm_rpc_api::Hash32,
        request: SubmitJob,
    ) -> RpcResult<SubmitResult> {
        let reply = self
            .to_sequencer(request.program_id, home, |member| {
                let request = request.clone();
                match member {
                    Role::Home => ForwardedCall::SubmitJob { request },
                    Role::Takeover => ForwardedCall::SubmitJobTakeover { request },
                }
            })
            .await?;
        match reply {
            Some(ForwardedReply::Submitted { result }) => Ok(*result),
            Some(other) => Err(unexpected(other)),
            None => {
                tracing::info!(program_id = %request.program_id, "the members ranked before this node are down: accepting the job here");
                self.ctx.jobs.submit_takeover(request).await.map_err(rpc)
            }
        }
    }

    /// Sends `call(role)` along the route `consensus::routing::sequencer_route` plans (live
    /// members in rank order, then those suspected within `net.suspect_ms`) until one
    /// answers; returns its reply, or None when the next member to try is this node itself. A
    /// member that does not answer is suspected and the next one is tried. A committee of one
    /// has no other member to fail over to: only the home is tried.
    async fn to_sequencer(
        &self,
        program_id: ProgramId,
        home: onvm_rpc_api::Hash32,
        call: impl Fn(Role) -> ForwardedCall,
    ) -> RpcResult<Option<ForwardedReply>> {
        let peers = self.ctx.net.peers();
        let committee: Vec<onvm_rpc_api::Hash32> = self
            .ctx
            .programs
            .info(program_id)
            .await
            .map_err(rpc)?
            .manifest
            .manifest
            .committee
            .iter()
            .map(|m| m.endpoint_id)
            .collect();
        let me = onvm_rpc_api::Hash32(*self.ctx.identity.endpoint_id().as_bytes());
        let route = sequencer_route(&committee, home, me, |m| peers.is_suspected(m));
        let mut failure = None;
        for hop in route {
            let (member, role) = match hop {
                Hop::Local => return Ok(None),
                Hop::Forward { member, role } => (member, role),
            };
            match peers.forward(member, &call(role)).await {
                Ok(reply) => {
                    peers.clear_suspect(&member);
                    return self.finish_forward(member, reply).await.map(Some);
                }
                Err(e) => {
                    tracing::warn!(%program_id, %member, "sequencer did not answer, trying the next member: {e}");
                    peers.suspect(member);
                    failure = Some((member, e));
                }
            }
        }
        Err(match failure {
            Some((member, e)) => home_unreachable(member, &e),
            None => rpc_error(
                codes::UNAVAILABLE,
                "home_unreachable",
                "no committee member could be reached",
                json!({"home": home}),
            ),
        })
    }
}

fn not_home(check: Result<(), ProgramError>) -> RpcResult<Option<onvm_rpc_api::Hash32>> {
    match check {
        Ok(()) => Ok(None),
        Err(ProgramError::NotHome { home, .. }) => Ok(Some(home)),
        Err(e) => Err(rpc(e)),
    }
}

/// The error of a call whose sequencer could not be reached.
fn home_unreachable(node: onvm_rpc_api::Hash32, e: &crate::net::PeerError) -> ErrorObjectOwned {
    rpc_error(
        codes::UNAVAILABLE,
        "home_unreachable",
        format!("the program's home could not be reached: {e}"),
        json!({"home": node}),
    )
}

fn executed(reply: ForwardedReply) -> RpcResult<ExecuteResult> {
    match reply {
        ForwardedReply::Executed { result } => Ok(*result),
        other => Err(unexpected(other)),
    }
}

pub(super) fn unexpected(reply: ForwardedReply) -> ErrorObjectOwned {
    rpc_error(
        codes::INTERNAL_ERROR,
        "internal",
        format!("the program's home answered with an unexpected reply: {reply:?}"),
        json!(null),
    )
}
