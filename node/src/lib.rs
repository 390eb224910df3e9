//! The ONVM node library. One module per concern (DESIGN.md §3); `node` wires them together.

pub mod blobs;
pub mod config;
pub mod consensus;
pub mod dag_log;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub mod net;
pub mod node;
pub mod programs;
pub mod relay;
pub mod rpc;
pub mod state;
pub mod store;
mod util;
pub mod vm;

pub use config::Config;
pub use identity::Identity;
pub use node::{CONFIG_FILE, IDENTITY_FILE, InitOutcome, Node, NodeError, init_data_dir};
