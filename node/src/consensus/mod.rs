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
//! Where the node stands (docs/PROTOCOL.md, "Committees"): the node's call path still runs the
//! single-round attestation in `programs.rs` (sequencer proposes, members re-execute and sign,
//! a takeover settles signed proposals first). Its quorum arithmetic comes from [`quorum`]; the
//! PBFT core here is verified by the simulator and is the next step of the call path, driven by
//! `net` through a transport trait, which will give the node view changes.

pub mod driver;
pub mod pbft;
pub mod quorum;
pub mod routing;
#[cfg(test)]
mod sim;
