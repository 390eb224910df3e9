//! Consensus: how a program's committee agrees on one receipt per height (DESIGN.md §7).
//!
//! This module is the protocol's home. Its decisions are pure code that takes time as an
//! argument and returns what to do, in the style of iroh-gossip's `proto`:
//! - [`quorum`]: committee arithmetic (faults tolerated, quorum size);
//! - [`routing`]: which committee member a writing call goes to, in which role, and which
//!   members are suspected dead (time passed in);
//! - [`tendermint`]: Tendermint on Malachite's model-checked core (`arc-malachitebft-core-
//!   consensus`), with ONVM's values, signed bytes (every vote names network, program,
//!   height, round and value), aggregated BLS certificates, misbehaviour evidence, a pure
//!   `Instance` shell, the `sequencer` around it (call queue, forwarding, catch-up, leader
//!   rotation), its async `driver` over `Transport`, `Durable` and `Executor` traits, and a
//!   seeded simulator (`TM_SIM_SEED=<n> cargo test -p onvm-node --lib tendermint::sim --
//!   --nocapture` replays one seed);
//! - [`committees`]: the node's committees: a driver per program this node is a member of,
//!   its transport over `net`'s `/onvm/committee/2`, its log in the store and its executor
//!   over `programs`.
//!
//! The node's call path (docs/PROTOCOL.md, "Committees"): a writing call of a program whose
//! committee has more than one member is sequenced by Tendermint through [`committees`]; a
//! committee of one runs its calls alone and its receipts carry its executor's signature.

pub mod quorum;
pub mod routing;
pub mod tendermint;

pub mod committees;
pub use committees::Committees;

/// Whether a program's writing calls are agreed by its committee (more than one member; the
/// threshold is always the BFT quorum, `committee::check_threshold`).
pub fn runs_consensus(manifest: &onvm_rpc_api::program::ProgramManifest) -> bool {
    manifest.committee.len() > 1
}
