//! The one place each module's error gets its JSON-RPC code and `data.kind` (the table in
//! docs/RPC.md, "Errors"). Handlers write `.map_err(rpc)`.

use jsonrpsee::core::RpcResult;
use jsonrpsee::types::ErrorObjectOwned;
use onvm_rpc_api::error::{self as codes, rpc_error};
use serde_json::json;

use crate::blobs::BlobError;
use crate::jobs::JobError;
use crate::net::PeerError;
use crate::programs::ProgramError;
use crate::rpc::auth::{AuthError, MAX_TOKENS};
use crate::store::StoreError;

/// A module error as the JSON-RPC error a client sees.
pub(crate) trait ToRpcError {
    fn to_rpc(self) -> ErrorObjectOwned;
}

/// `map_err(rpc)`: any module error as its JSON-RPC error.
pub(crate) fn rpc<E: ToRpcError>(e: E) -> ErrorObjectOwned {
    e.to_rpc()
}

/// Maps a blob error to its stable code, message and `data.kind`.
impl ToRpcError for BlobError {
    fn to_rpc(self) -> ErrorObjectOwned {
        let e = self;
        let msg = e.to_string();
        match e {
            BlobError::NotFound(id) => {
                rpc_error(codes::NOT_FOUND, "blob_not_found", msg, json!({"id": id}))
            }
            BlobError::UploadNotFound(id) => rpc_error(
                codes::NOT_FOUND,
                "upload_not_found",
                msg,
                json!({"upload_id": id}),
            ),
            BlobError::TooLarge { size, max } => rpc_error(
                codes::LIMIT_EXCEEDED,
                "blob_too_large",
                msg,
                json!({"size": size, "max": max}),
            ),
            BlobError::InlineTooLarge { size, max } => rpc_error(
                codes::LIMIT_EXCEEDED,
                "inline_too_large",
                msg,
                json!({"size": size, "max": max}),
            ),
            BlobError::ChunkTooLarge { len, max } => rpc_error(
                codes::LIMIT_EXCEEDED,
                "chunk_too_large",
                msg,
                json!({"len": len, "max": max}),
            ),
            BlobError::RangeTooLarge { len, max, size } => rpc_error(
                codes::LIMIT_EXCEEDED,
                "range_too_large",
                msg,
                json!({"len": len, "max": max, "size": size}),
            ),
            BlobError::OffsetOutOfRange { offset, size } => rpc_error(
                codes::INVALID_PARAMS,
                "offset_out_of_range",
                msg,
                json!({"offset": offset, "size": size}),
            ),
            BlobError::OffsetMismatch { expected, got } => rpc_error(
                codes::CONFLICT,
                "offset_mismatch",
                msg,
                json!({"expected_offset": expected, "got": got}),
            ),
            BlobError::PastDeclaredSize { would_be, size } => rpc_error(
                codes::CONFLICT,
                "past_declared_size",
                msg,
                json!({"would_be": would_be, "size": size}),
            ),
            BlobError::Incomplete { received, size } => rpc_error(
                codes::CONFLICT,
                "upload_incomplete",
                msg,
                json!({"received": received, "size": size}),
            ),
            BlobError::HashMismatch { expected, actual } => rpc_error(
                codes::CONFLICT,
                "hash_mismatch",
                msg,
                json!({"expected": expected, "actual": actual}),
            ),
            BlobError::TooManyUploads { max } => {
                rpc_error(codes::BUSY, "too_many_uploads", msg, json!({"max": max}))
            }
            BlobError::TooManyClientUploads { max } => rpc_error(
                codes::BUSY,
                "too_many_uploads",
                msg,
                json!({"max": max, "config_key": "blobs.max_open_uploads_per_client"}),
            ),
            BlobError::DiskSpace {
                needed,
                free,
                reserve,
                pending,
            } => rpc_error(
                codes::LIMIT_EXCEEDED,
                "disk_space",
                msg,
                json!({"needed": needed, "free": free, "reserve": reserve, "pending": pending}),
            ),
            BlobError::MimeTooLong => {
                rpc_error(codes::INVALID_PARAMS, "mime_too_long", msg, json!(null))
            }
            BlobError::BadCursor(_) => {
                rpc_error(codes::INVALID_PARAMS, "bad_cursor", msg, json!(null))
            }
            BlobError::Store(s) => s.to_rpc(),
            e @ (BlobError::Backend(_) | BlobError::Io { .. }) if e.is_disk_full() => {
                rpc_error(codes::UNAVAILABLE, "disk_full", msg, json!(null))
            }
            BlobError::Backend(_) | BlobError::Io { .. } => {
                tracing::error!("blob request failed: {msg}");
                rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
            }
        }
    }
}

impl ToRpcError for ProgramError {
    fn to_rpc(self) -> ErrorObjectOwned {
        let e = self;
        let msg = e.to_string();
        match e {
            ProgramError::NotFound(id) => rpc_error(
                codes::NOT_FOUND,
                "program_not_found",
                msg,
                json!({"program_id": id}),
            ),
            ProgramError::ReceiptNotFound(id) => rpc_error(
                codes::NOT_FOUND,
                "receipt_not_found",
                msg,
                json!({"receipt_id": id}),
            ),
            ProgramError::InvalidProgram(v) => rpc_error(
                codes::INVALID_PROGRAM,
                "invalid_program",
                msg,
                json!({"reason": v.to_string()}),
            ),
            ProgramError::NotAttested {
                signed,
                threshold,
                refusals,
            } => rpc_error(
                codes::UNAVAILABLE,
                "not_attested",
                msg,
                json!({"signed": signed, "threshold": threshold, "refusals": refusals}),
            ),
            ProgramError::NotHome { program, home } => rpc_error(
                codes::UNAVAILABLE,
                "not_home",
                msg,
                json!({"program_id": program, "home": home}),
            ),
            ProgramError::BadRequest(_) => {
                rpc_error(codes::INVALID_PARAMS, "bad_request", msg, json!(null))
            }
            ProgramError::CallerRefused { kind, .. } => {
                rpc_error(codes::FORBIDDEN, kind, msg, json!(null))
            }
            ProgramError::RequestConflict {
                request_id,
                receipt,
            } => rpc_error(
                codes::CONFLICT,
                "request_id_conflict",
                msg,
                json!({"request_id": request_id, "receipt_id": receipt}),
            ),
            ProgramError::TooLarge {
                what,
                size,
                max,
                key,
            } => rpc_error(
                codes::LIMIT_EXCEEDED,
                "limit_exceeded",
                msg,
                json!({"what": what, "size": size, "max": max, "config_key": key}),
            ),
            ProgramError::ExecutionFailed(result) => {
                let (trap_kind, trap_message) = match &result.outcome {
                    onvm_rpc_api::program::Outcome::Trap { kind, message } => {
                        (Some(kind.clone()), Some(message.clone()))
                    }
                    _ => (None, None),
                };
                rpc_error(
                    codes::EXECUTION_FAILED,
                    result.outcome.kind(),
                    msg,
                    json!({"trap_kind": trap_kind, "trap_message": trap_message, "fuel_used": result.fuel_used, "result": result}),
                )
            }
            ProgramError::Blob(b) => b.to_rpc(),
            ProgramError::Store(s) => s.to_rpc(),
            ProgramError::Internal(_) => {
                tracing::error!("program request failed: {msg}");
                rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
            }
        }
    }
}

impl ToRpcError for JobError {
    fn to_rpc(self) -> ErrorObjectOwned {
        let e = self;
        let msg = e.to_string();
        match e {
            JobError::NotFound(id) => rpc_error(
                codes::NOT_FOUND,
                "job_not_found",
                msg,
                json!({"job_id": id}),
            ),
            JobError::BadRequest(_) => {
                rpc_error(codes::INVALID_PARAMS, "bad_request", msg, json!(null))
            }
            JobError::NoOutput { id, status } => rpc_error(
                codes::JOB_NOT_READY,
                "no_output",
                msg,
                json!({"job_id": id, "status": status}),
            ),
            JobError::Program(p) => p.to_rpc(),
            JobError::Blob(b) => b.to_rpc(),
            JobError::Store(crate::store::StoreError::RequestConflict {
                request_id,
                existing,
                what,
            }) => rpc_error(
                codes::CONFLICT,
                "request_id_conflict",
                msg,
                json!({"request_id": request_id, "existing_job_id": existing, "differs_in": what}),
            ),
            JobError::Store(crate::store::StoreError::QueueFull { max }) => {
                rpc_error(codes::BUSY, "queue_full", msg, json!({"max": max}))
            }
            JobError::Store(s) => s.to_rpc(),
        }
    }
}

/// A storage failure: one the client can wait out (a full disk, the database reopening after
/// a failed write) is `unavailable` with its kind; anything else is internal.
impl ToRpcError for StoreError {
    fn to_rpc(self) -> ErrorObjectOwned {
        let msg = self.to_string();
        match self {
            StoreError::DiskFull(_) => rpc_error(codes::UNAVAILABLE, "disk_full", msg, json!(null)),
            StoreError::Recovering(_) => {
                rpc_error(codes::UNAVAILABLE, "store_recovering", msg, json!(null))
            }
            _ => internal(msg),
        }
    }
}

impl ToRpcError for PeerError {
    fn to_rpc(self) -> ErrorObjectOwned {
        let msg = self.to_string();
        match self {
            PeerError::BadTicket(_) => {
                rpc_error(codes::INVALID_PARAMS, "bad_ticket", msg, json!(null))
            }
            PeerError::SelfDial => rpc_error(codes::INVALID_PARAMS, "self_dial", msg, json!(null)),
            PeerError::WrongNetwork { theirs, .. } => rpc_error(
                codes::CONFLICT,
                "wrong_network",
                msg,
                json!({"their_network": theirs}),
            ),
            PeerError::Unreachable { .. }
            | PeerError::NotDelivered { .. }
            | PeerError::Protocol { .. } => {
                rpc_error(codes::UNAVAILABLE, "peer_unreachable", msg, json!(null))
            }
        }
    }
}

impl ToRpcError for AuthError {
    fn to_rpc(self) -> ErrorObjectOwned {
        let msg = self.to_string();
        match self {
            AuthError::BadRequest(_) => {
                rpc_error(codes::INVALID_PARAMS, "bad_token_request", msg, json!(null))
            }
            AuthError::TooMany => rpc_error(
                codes::LIMIT_EXCEEDED,
                "too_many_tokens",
                msg,
                json!({"max": MAX_TOKENS}),
            ),
            AuthError::Store(s) => s.to_rpc(),
        }
    }
}

/// An internal failure (logged: it is a bug or a broken disk, not the client's doing).
pub(crate) fn internal(msg: impl Into<String>) -> ErrorObjectOwned {
    let msg = msg.into();
    tracing::error!("RPC request failed: {msg}");
    rpc_error(codes::INTERNAL_ERROR, "internal", msg, json!(null))
}

/// Runs blocking work of a service off the async threads; a panicked task is internal.
pub(crate) async fn blocking<T: Send + 'static, E: ToRpcError + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> RpcResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(rpc)
}
