//! The ONVM wire contract: identifiers, RPC wire types, stable error codes and the jsonrpsee
//! traits. Pure: no networking, storage or VM dependencies, so browsers, the CLI and auditors
//! can depend on it cheaply.

pub mod api;
pub mod error;
pub mod ids;
pub mod types;

pub use ids::{BlobId, IdParseError, ProgramId, UploadId};
