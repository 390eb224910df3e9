//! Stable JSON-RPC error codes (the one table, documented in docs/RPC.md).
//!
//! Codes never change meaning once released. Every error carries a human message and a `data`
//! object whose `kind` field names the error in words, so clients can match on either.

#[cfg(feature = "rpc")]
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};

/// JSON-RPC 2.0 standard: the request is not valid JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC 2.0 standard: not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC 2.0 standard: no such method.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC 2.0 standard: wrong parameters (malformed id, bad base64, out-of-range value...).
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC 2.0 standard: the node failed internally; the request may be retried.
pub const INTERNAL_ERROR: i32 = -32603;
/// The request body exceeded `rpc.max_request_bytes` (set by the server transport).
pub const OVERSIZED_REQUEST: i32 = -32007;
/// The batch exceeded `rpc.max_batch`.
pub const OVERSIZED_BATCH: i32 = -32010;

/// The referenced object (blob, upload, ...) does not exist on this node.
pub const NOT_FOUND: i32 = -32001;
/// A size limit of the node was exceeded (blob too large, chunk too large, range too long...).
pub const LIMIT_EXCEEDED: i32 = -32002;
/// The request contradicts existing state (upload offset mismatch, content hash mismatch...).
pub const CONFLICT: i32 = -32003;
/// The node is at capacity for this kind of work; retry later.
pub const BUSY: i32 = -32004;
/// The job is not in a state that has what was asked (e.g. output of a job still running).
pub const JOB_NOT_READY: i32 = -32030;
/// The node is not ready to serve this request (starting up, shutting down).
pub const UNAVAILABLE: i32 = -32005;
/// The caller may not make this request (node to node: not an announced node of this network,
/// or not a member of the program's committee for a member-only request).
pub const FORBIDDEN: i32 = -32006;

/// A program call ran and did not succeed: `data.kind` is the outcome (`out_of_fuel`, `trap`,
/// `memory_limit`, `stack_overflow`, `timeout`, `bad_output`, `rejected`), `data.result` the full
/// result including the receipt of a writing call.
pub const EXECUTION_FAILED: i32 = -32020;
/// The wasm module was refused at deploy (not wasm, unknown import, bad entrypoint...).
pub const INVALID_PROGRAM: i32 = -32021;

/// Machine-readable detail attached to every ONVM error as `error.data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    /// Stable snake_case name, e.g. `not_found`, `blob_too_large`, `offset_mismatch`.
    pub kind: String,
    /// Extra fields specific to `kind` (limits, expected values, ids).
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// Builds an ONVM error object with a `data` payload.
#[cfg(feature = "rpc")]
pub fn rpc_error(
    code: i32,
    kind: &str,
    message: impl Into<String>,
    detail: serde_json::Value,
) -> ErrorObjectOwned {
    let detail = match detail {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("detail".into(), other);
            map
        }
    };
    let data = ErrorData {
        kind: kind.to_string(),
        detail,
    };
    ErrorObjectOwned::owned(code, message.into(), Some(data))
}

/// Reads the typed `data` back out of an error object (clients and tests).
#[cfg(feature = "rpc")]
pub fn error_data(err: &jsonrpsee::types::ErrorObject<'_>) -> Option<ErrorData> {
    err.data()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
}
