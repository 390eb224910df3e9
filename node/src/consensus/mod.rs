//! Consensus: how a program's committee agrees on one receipt per height (DESIGN.md §7).
//!
//! This module is the protocol's home. Its decisions are pure code that takes time as an
//! argument and returns what to do, in the style of iroh-gossip's `proto`:
//! - [`quorum`]: committee arithmetic (faults tolerated, quorum size, leader rotation, vote
//!   tallies with equivocation evidence, view-timeout backoff);
//! - [`routing`]: which committee member a writing call goes to, in which role, and which
//!   members are suspected dead (time passed in);
//! - [`pbft`]: PBFT (Castro & Liskov 1999) for one program and one member, per height with
//!   views, prepared certificates, the lock rule on view change, persisted votes and catch-up;
//!   `Member::handle(event, now_ms) -> Vec<Action>`;
//! - `sim` (tests only): a seeded deterministic simulator (TigerBeetle's VOPR is the model)
//!   that runs every member's real `pbft::Member` over a simulated network with loss,
//!   duplication, delay, reordering, partitions, crash and restart, slow and Byzantine members,
//!   client retries and calls that time out, checking safety and liveness invariants after every
//!   step. `ONVM_SIM_SEED=<n> cargo test -p onvm-node --lib consensus::sim -- --nocapture`
//!   replays one seed with its trace; `ONVM_SIM_SEEDS=<n>` runs n seeds.
//!
//! - [`tendermint`]: Tendermint on Malachite's model-checked core (`arc-malachitebft-core-
//!   consensus`), with ONVM's values, signed bytes (every vote names network, program,
//!   height, round and value), aggregated BLS certificates, misbehaviour evidence and a pure
//!   `Instance` shell with its own seeded simulator; the replacement for [`pbft`], not yet on
//!   the call path;
//! - [`driver`]: the async shell that runs one program's member over `Transport`, `Durable` and
//!   `Executor` traits;
//! - [`committees`]: the node's committees: a driver per PBFT program this node is a member of,
//!   its transport over `net`'s `/onvm/pbft/1` and its executor over `programs`.
//!
//! The node's call path (docs/PROTOCOL.md, "Committees"): a committee of K > 1 with the default
//! threshold (the PBFT quorum) is sequenced by PBFT through [`committees`]; a committee deployed
//! with another threshold keeps the single-round attestation in `programs.rs` (the sequencer
//! proposes, members re-execute and sign, a takeover settles signed proposals first).

pub mod driver;
pub mod pbft;
pub mod quorum;
pub mod routing;
#[cfg(test)]
mod sim;
pub mod tendermint;

pub mod committees;
pub use committees::Committees;

/// Whether a program's writing calls are sequenced by PBFT on its committee: a committee of
/// more than one whose threshold is the PBFT quorum (the default threshold). A committee
/// deployed with another threshold keeps the single-round attestation (docs/PROTOCOL.md).
pub fn runs_pbft(manifest: &onvm_rpc_api::program::ProgramManifest) -> bool {
    let k = manifest.committee.len();
    k > 1 && manifest.threshold as usize == quorum::quorum(k)
}
