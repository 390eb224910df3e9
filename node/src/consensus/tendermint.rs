//! Tendermint consensus for one program's committee, on Malachite's core
//! (`arc-malachitebft-core-consensus` 0.8.2): the protocol of Buchman, Kwon and Milosevic,
//! "The latest gossip on BFT consensus" (2018), as specified and model-checked by the
//! Malachite team. This module brings what only ONVM has: what a value is, who leads, what is
//! signed, and a pure shell ([`Instance`]) that a driver feeds and obeys.
//!
//! Each height of a program is one single-decree agreement on a [`Value`] (a call and the
//! receipt of its execution) among the `k` members of the committee, of which
//! `f = ⌊(k−1)/3⌋` may be Byzantine; a decision needs `q = k − f` precommits of one round.
//! Within a height:
//!
//! * round `r` is led by member `(first + r) % k`; `first` is chosen by the caller, and the
//!   [`sequencer`] rotates it with every height (`first = h % k`, see its "Leader rotation");
//! * the leader asks its driver to execute the next call ([`Action::GetValue`]) and proposes
//!   the result ([`Instance::propose`]); a member that locked or saw a polka re-proposes that
//!   value instead (the core does this without asking);
//! * every other member re-executes the proposed call ([`Action::Validate`]); it prevotes
//!   for the value only once its re-execution agreed ([`Instance::on_value_validated`]), and
//!   nil when it disagreed or when the propose timeout fired first. A value is re-executed
//!   once per height, and only from a proposal the core kept: the core drops proposals not
//!   signed by the round's leader and keeps at most two distinct values per round (plus one
//!   with a quorum's polka), so a Byzantine leader's flood costs at most that many
//!   re-executions per round it leads. The core also drops a verdict on a value it kept no
//!   proposal of: asking about a dropped proposal, and then never again, once stalled a
//!   height for good (sim seeds 7027 and 9410);
//! * `q` prevotes for the value lock it and make members precommit it; `q` precommits of one
//!   round decide it ([`Action::Decide`], with the certificate, which
//!   [`certificate::aggregate_certificate`] folds into one BLS signature plus a bitmap);
//! * otherwise timeouts (`TimeoutConfig`, growing per round) move everyone to the next round.
//!
//! Safety does not depend on timing; liveness needs the propose timeout to exceed what a call
//! can take (see [`TimeoutConfig`]).
//!
//! Pure: no IO, clock or randomness. The driver performs the returned [`Action`]s in order;
//! in particular an [`Action::WalAppend`] must be durable before it performs the next action
//! of the same list, so that nothing this member signed can leave before the log remembers
//! it, and [`Instance::recover`] restarts from the log without ever signing a conflicting
//! message. Signing and verification go through the [`Signing`] / [`Verifier`] traits, so
//! this module imports no cryptography library; [`keys`] implements them over the node's
//! identity (BLS min_sig with proofs of possession).
//!
//! On the call path: [`sequencer`] (the call queue, forwarding, catch-up and leader rotation
//! around an [`Instance`]) runs in [`driver`] (its tokio actor over transport, storage and
//! executor traits), which `consensus::committees` implements over the node's iroh protocol,
//! redb and programs. The seeded simulator (`sim`) runs a Byzantine member; 20,000 seeds keep
//! every invariant, liveness included (every call decided by the deadline; the last two seeds
//! that stalled, 7027 and 9410, are kept as a test).
//!
//! Decided heights and catch-up: the others ignore messages about heights they finished, so
//! a member that fell behind (missed precommits, restarted late) cannot decide by itself. The
//! driver of a member that decided height `h` answers any message about `h` with its stored
//! decision (value and [`AggregateCertificate`]), which the laggard checks and adopts with
//! [`Instance::on_decision`] (the core's own sync protocol is not used). A member missing
//! several heights fetches them the same way, in order, checking each with
//! [`verify_commit_certificate`], and starts the next height.

mod certificate;
mod codec;
mod context;
pub mod driver;
mod instance;
pub mod keys;
pub mod sequencer;
mod sign;

pub use certificate::{
    AggregateCertificate, CertError, Misbehavior, aggregate_certificate, verify_commit_certificate,
    verify_misbehavior,
};
pub use codec::{DecodeError, MAX_CERT_SIGNATURES, MAX_SIGNATURE_LEN};
pub use context::{
    CommitCertificate, Committee, Height, MemberIndex, OnvmContext, PolkaCertificate, Proposal,
    RoundCertificate, Signature, SignedProposal, SignedVote, VALUE_ID_CONTEXT, Value, ValueId,
    Vote,
};
pub use instance::{
    Action, Config, ConfigError, FUTURE_HEIGHTS, Instance, MAX_BUFFERED_PER_SIGNER, Message,
    TimeoutConfig, TimeoutKind, WalEntry,
};
pub use malachitebft_core_types::{CommitSignature, NilOrVal, Round, VoteType};
pub use sign::{
    Domain, PROPOSAL_TAG, Signing, VOTE_TAG, Verifier, proposal_message, verify_proposal,
    verify_vote, vote_bytes, vote_message,
};

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
