//! The ONVM wire contract: identifiers, RPC wire types, stable error codes and the jsonrpsee
//! traits. Pure: no networking, storage or VM dependencies, so browsers, the CLI and auditors
//! can depend on it cheaply. Without the default feature `rpc` there is no jsonrpsee: only the
//! wire types and pure verifiers, which build for wasm32-unknown-unknown (wasm_programs/verifier).

#[cfg(feature = "rpc")]
pub mod api;
pub mod auth;
pub mod bls;
pub mod caller;
pub mod committee;
pub mod dag;
pub mod error;
pub mod hash32;
pub mod ids;
pub mod jobs;
pub mod methods;
pub mod program;
pub mod smt;
pub mod types;

pub use hash32::{Hash32, HexBytes};
pub use ids::{BlobId, IdParseError, JobId, ProgramId, ReceiptId, UploadId};
