//! What members sign, and the keys they sign with.
//!
//! Every signed message is versioned and domain-separated: a tag, the network id and the
//! program id come first, so a signature can never be replayed on another network, another
//! program, or as another kind of message.
//!
//! A vote signs `VOTE_TAG ‖ len(network) as u32 BE ‖ network ‖ program (32) ‖ height u64 BE ‖
//! round u32 BE ‖ type (1 = prevote, 2 = precommit) ‖ 0 | 1 ‖ value id (32, when 1)`, and
//! deliberately **not** the voter: all precommits of one round for one value sign identical
//! bytes, so the node can aggregate them into one BLS signature plus a signer bitmap
//! ([`super::certificate`]). Who signed is proven by the key the signature verifies under.
//!
//! A proposal signs `PROPOSAL_TAG ‖ network ‖ program ‖ height ‖ round ‖ pol_round (u32 BE,
//! `u32::MAX` for nil) ‖ proposer u32 BE ‖ call id ‖ receipt id ‖ value proposer u32 BE`.
//!
//! The round `u32::MAX` is reserved: it encodes `Round::Nil`, which no vote or proposal may
//! carry, and [`verify_vote`] / [`verify_proposal`] refuse it.

use malachitebft_core_types::{NilOrVal, Round, VoteType};

use super::context::{Height, MemberIndex, Proposal, SignedProposal, SignedVote, ValueId, Vote};

/// Tag of vote signatures (prevotes and precommits).
pub const VOTE_TAG: &[u8] = onvm_rpc_api::committee::VOTE_TAG;
/// Tag of proposal signatures.
pub const PROPOSAL_TAG: &[u8] = b"onvm/tendermint-proposal/v1";

/// Checks signatures of committee members. Implemented by the node over the committee's BLS
/// public keys (in the node, only `identity.rs` touches blst). Needs no secret key: anyone who
/// knows the committee can check a certificate.
pub trait Verifier {
    /// Whether `signature` is member `member`'s signature of `msg`; false for an unknown
    /// member or malformed bytes.
    fn verify(&self, member: MemberIndex, msg: &[u8], signature: &[u8]) -> bool;

    /// Combines signatures of one message into one (BLS aggregation); `None` when one of them
    /// is malformed.
    fn aggregate(&self, signatures: &[&[u8]]) -> Option<Vec<u8>>;

    /// Whether `signature` aggregates signatures of `msg` by exactly `members` (distinct).
    /// With BLS over one message this is a fast aggregate verify, which is only sound with
    /// proofs of possession of the members' keys (checked when the committee was formed).
    fn verify_aggregate(&self, members: &[MemberIndex], msg: &[u8], signature: &[u8]) -> bool;
}

/// A member's own consensus key, on top of the committee's [`Verifier`].
pub trait Signing: Verifier {
    /// Signs `msg` with this member's key. Must be deterministic (BLS is), so a vote re-derived
    /// during WAL replay gets the recorded signature back.
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
}

/// Where signatures are valid: one network, one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub network: String,
    pub program: [u8; 32],
}

impl Domain {
    fn prefix(&self, tag: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(tag);
        out.extend_from_slice(&(self.network.len() as u32).to_be_bytes());
        out.extend_from_slice(self.network.as_bytes());
        out.extend_from_slice(&self.program);
    }
}

fn round_bytes(round: Round) -> [u8; 4] {
    round.as_u32().unwrap_or(u32::MAX).to_be_bytes()
}

fn vote_type_byte(vote_type: VoteType) -> u8 {
    match vote_type {
        VoteType::Prevote => onvm_rpc_api::committee::PREVOTE,
        VoteType::Precommit => onvm_rpc_api::committee::PRECOMMIT,
    }
}

/// The bytes a vote of `vote_type` for `value` at (`height`, `round`) signs, whoever casts it
/// (`onvm_rpc_api::committee::vote_bytes`: receipt verifiers rebuild a precommit's bytes with
/// the same function).
pub fn vote_bytes(
    domain: &Domain,
    height: Height,
    round: Round,
    vote_type: VoteType,
    value: &NilOrVal<ValueId>,
) -> Vec<u8> {
    let value = match value {
        NilOrVal::Nil => None,
        NilOrVal::Val(id) => Some(&id.0),
    };
    onvm_rpc_api::committee::vote_bytes(
        &domain.network,
        &domain.program,
        height.0,
        round.as_u32().unwrap_or(u32::MAX),
        vote_type_byte(vote_type),
        value,
    )
}

/// The bytes `vote` signs.
pub fn vote_message(domain: &Domain, vote: &Vote) -> Vec<u8> {
    vote_bytes(domain, vote.height, vote.round, vote.vote_type, &vote.value)
}

/// The bytes `proposal` signs.
pub fn proposal_message(domain: &Domain, proposal: &Proposal) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROPOSAL_TAG.len() + domain.network.len() + 128);
    domain.prefix(PROPOSAL_TAG, &mut out);
    out.extend_from_slice(&proposal.height.0.to_be_bytes());
    out.extend_from_slice(&round_bytes(proposal.round));
    out.extend_from_slice(&round_bytes(proposal.pol_round));
    out.extend_from_slice(&proposal.proposer.0.to_be_bytes());
    out.extend_from_slice(&proposal.value.call_id);
    out.extend_from_slice(&proposal.value.receipt_id);
    out.extend_from_slice(&proposal.value.proposer.0.to_be_bytes());
    out
}

/// Whether `vote` is validly signed by its voter (the round must be defined).
pub fn verify_vote(verifier: &impl Verifier, domain: &Domain, vote: &SignedVote) -> bool {
    vote.message.round.is_defined()
        && verifier.verify(
            vote.message.voter,
            &vote_message(domain, &vote.message),
            &vote.signature.0,
        )
}

/// Whether `proposal` is validly signed by its proposer (its round must be defined).
pub fn verify_proposal(
    verifier: &impl Verifier,
    domain: &Domain,
    proposal: &SignedProposal,
) -> bool {
    proposal.message.round.is_defined()
        && verifier.verify(
            proposal.message.proposer,
            &proposal_message(domain, &proposal.message),
            &proposal.signature.0,
        )
}
