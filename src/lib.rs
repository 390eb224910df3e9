pub use onvm_node as node;
pub use onvm_rpc_api as rpc_api;
