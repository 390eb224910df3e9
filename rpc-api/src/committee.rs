//! Committees and aggregated receipts (DESIGN.md §7): who attests a program's calls, and the
//! pure check that an `AggregatedReceipt` carries a threshold of valid committee signatures.
//! No re-execution and no node needed: browsers, the CLI and auditors use this directly.

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{
    G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Gt, multi_miller_loop,
};
use serde::{Deserialize, Serialize};

use crate::bls::{SIG_DST, public_key, verify_proof_of_possession};
use crate::hash32::{Hash32, HexBytes};
use crate::ids::{ProgramId, ReceiptId};
use crate::program::{ExecutionReceipt, receipt_signing_message};

/// v2: the rank no longer depends on the program id, which the deployer picks freely through
/// the salt (v1 let a deployer grind salts until its friends made up the committee).
pub const COMMITTEE_RANK_TAG: &[u8] = b"onvm/committee-rank/v2";
/// Most members a committee may have (the signer bitmap is at most 32 bytes).
pub const MAX_COMMITTEE: usize = 256;

/// A node eligible for committees: announced in the DAG with a BLS key and its proof of
/// possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// ed25519 public key (iroh endpoint id).
    pub endpoint_id: Hash32,
    /// Compressed BLS12-381 G2 public key (96 bytes).
    pub bls_public_key: HexBytes,
    /// The key's signature over itself (48 bytes), proving its owner holds the secret.
    pub proof_of_possession: HexBytes,
}

/// A program's committee: ranked members (the first live one sequences) and the number of
/// signatures a receipt needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    pub program_id: ProgramId,
    /// Bumped when the membership changes; a receipt names the epoch it was signed in.
    pub epoch: u64,
    pub members: Vec<Member>,
    pub threshold: u32,
}

/// The default threshold for `k` members: more than two thirds.
pub fn default_threshold(k: usize) -> u32 {
    (2 * k / 3 + 1) as u32
}

/// The only threshold a committee of `k` members may have: the BFT quorum
/// [`default_threshold`]. With `f = (k - 1) / 3` members allowed to lie, any two sets of
/// `k - f` signers share an honest member, which signs one value per height; a smaller
/// threshold lets two values each gather enough signatures at one height, a larger one lets
/// a single dead member halt the program. Deploys and replicas check it alike.
pub fn check_threshold(k: usize, threshold: u32) -> Result<(), String> {
    let quorum = default_threshold(k);
    if threshold == quorum {
        return Ok(());
    }
    Err(format!(
        "threshold {threshold} is not the BFT quorum of a {k}-member committee: it tolerates \
         f = {} lying or dead members and signs with k - f = {quorum} (two smaller quorums need \
         not share an honest member; a larger one halts on one dead member); leave threshold \
         out or pass {quorum}",
        (k.max(1) - 1) / 3
    ))
}

/// A member's rank for the deployer's `deploy_nonce`-th program: smaller ranks first. Neither
/// the salt nor the code enters it, so a deployer cannot pick its committee by choosing them;
/// the nonce (how many programs it deployed before, recomputed by every replica from the DAG)
/// changes only with a public deploy, so grinding costs one visible deploy per try.
pub fn rank(deployer: &Hash32, deploy_nonce: u64, endpoint_id: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(COMMITTEE_RANK_TAG)
        .update(&deployer.0)
        .update(&deploy_nonce.to_le_bytes())
        .update(&endpoint_id.0);
    Hash32(*h.finalize().as_bytes())
}

/// The public rule: the program's home (its deployer) first, then the other candidates by
/// `rank`, `k` in all (fewer if fewer candidates exist). Candidates without a valid proof of
/// possession are never chosen. Anyone holding the same candidate set gets the same committee.
pub fn select(home: &Member, deploy_nonce: u64, candidates: &[Member], k: usize) -> Vec<Member> {
    let mut others: Vec<&Member> = candidates
        .iter()
        .filter(|m| m.endpoint_id != home.endpoint_id)
        .filter(|m| verify_proof_of_possession(&m.bls_public_key.0, &m.proof_of_possession.0))
        .collect();
    others.sort_by_key(|m| {
        (
            rank(&home.endpoint_id, deploy_nonce, &m.endpoint_id),
            m.endpoint_id,
        )
    });
    others.dedup_by_key(|m| m.endpoint_id);
    let mut out = vec![home.clone()];
    out.extend(
        others
            .into_iter()
            .take(k.clamp(1, MAX_COMMITTEE) - 1)
            .cloned(),
    );
    out
}

/// Checks that `manifest`'s committee follows the public rule over `candidates` (the members
/// announced in the DAG below its deploy, recomputed by whoever checks): the recorded
/// candidate ids are exactly theirs, and `select` from the home with the recorded nonce gives
/// exactly the recorded members in order. Pure; replicas run it before accepting a deploy.
pub fn check_rule(
    manifest: &crate::program::ProgramManifest,
    deploy_nonce: u64,
    candidates: &[Member],
) -> Result<(), String> {
    if manifest.deploy_nonce != deploy_nonce {
        return Err(format!(
            "deploy_nonce is {}, the DAG below the deploy gives {deploy_nonce}",
            manifest.deploy_nonce
        ));
    }
    let mut ids: Vec<Hash32> = candidates.iter().map(|m| m.endpoint_id).collect();
    ids.sort();
    ids.dedup();
    if ids != manifest.candidates {
        return Err(format!(
            "the manifest lists {} committee candidates, the DAG below the deploy announces {}",
            manifest.candidates.len(),
            ids.len()
        ));
    }
    check_threshold(manifest.committee.len(), manifest.threshold)?;
    let home = manifest
        .committee
        .first()
        .ok_or_else(|| "the committee is empty".to_string())?;
    let expected = select(home, deploy_nonce, candidates, manifest.committee.len());
    if expected != manifest.committee {
        return Err("the committee does not follow committee::select over its candidates".into());
    }
    Ok(())
}

/// Tag of the bytes committee members sign when they vote (Tendermint prevotes and
/// precommits). A receipt's attestation is an aggregate of precommits.
pub const VOTE_TAG: &[u8] = b"onvm/tendermint-vote/v1";
/// BLAKE3 derive-key context of a value id (what votes name).
pub const VALUE_ID_CONTEXT: &str = "onvm/tendermint-value-id/v1";
/// Vote type byte of a prevote.
pub const PREVOTE: u8 = 1;
/// Vote type byte of a precommit.
pub const PRECOMMIT: u8 = 2;

/// The id of the value a committee agrees on at one height: the call, the receipt of its
/// execution, and the member that executed it (`proposer`, its index in the committee).
pub fn value_id(call_id: &[u8; 32], receipt_id: &[u8; 32], proposer: u32) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(VALUE_ID_CONTEXT);
    h.update(call_id);
    h.update(receipt_id);
    h.update(&proposer.to_be_bytes());
    *h.finalize().as_bytes()
}

/// The bytes a vote signs: `VOTE_TAG ‖ len(network) u32 BE ‖ network ‖ program (32) ‖ height
/// u64 BE ‖ round u32 BE ‖ vote type (1 prevote, 2 precommit) ‖ 0 | 1 ‖ value id (when 1)`.
/// The voter is deliberately not in it: all precommits of one round for one value sign the
/// same bytes, so they aggregate into one BLS signature plus a signer bitmap.
pub fn vote_bytes(
    network_id: &str,
    program: &[u8; 32],
    height: u64,
    round: u32,
    vote_type: u8,
    value: Option<&[u8; 32]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(VOTE_TAG.len() + network_id.len() + 86);
    out.extend_from_slice(VOTE_TAG);
    out.extend_from_slice(&(network_id.len() as u32).to_be_bytes());
    out.extend_from_slice(network_id.as_bytes());
    out.extend_from_slice(program);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&round.to_be_bytes());
    out.push(vote_type);
    match value {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id);
        }
    }
    out
}

/// A receipt attested by a committee: the receipt, the epoch, the consensus round that decided
/// it, which members signed (bit i of the bitmap, little-endian within each byte, is member i)
/// and their aggregate signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatedReceipt {
    pub id: ReceiptId,
    pub receipt: ExecutionReceipt,
    pub epoch: u64,
    /// The round whose precommits are aggregated; `None` only for a committee of one, whose
    /// executor signs `receipt_signing_message(network_id, id)` alone.
    #[serde(default)]
    pub round: Option<u32>,
    pub signers: HexBytes,
    /// Compressed G1 aggregate (48 bytes) of the signers' precommits of `round` for this
    /// receipt's value ([`precommit_message`]).
    pub signature: HexBytes,
}

/// The bytes a committee member's precommit for `receipt` in `round` signs: a vote at the
/// receipt's height for the value (call id, receipt id, executor's index in the committee).
pub fn precommit_message(
    receipt: &ExecutionReceipt,
    id: &ReceiptId,
    round: u32,
    executor: u32,
) -> Vec<u8> {
    let value = value_id(receipt.call_id.as_bytes(), id.as_bytes(), executor);
    vote_bytes(
        &receipt.network_id,
        receipt.program_id.as_bytes(),
        receipt.height,
        round,
        PRECOMMIT,
        Some(&value),
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    #[error("receipt id does not match its contents")]
    WrongId,
    #[error("receipt is for program {found}, the committee is {expected}'s")]
    WrongProgram {
        expected: ProgramId,
        found: ProgramId,
    },
    #[error("receipt was signed in epoch {found}, the committee is at epoch {expected}")]
    WrongEpoch { expected: u64, found: u64 },
    #[error("receipt is for network `{found}`, expected `{expected}`")]
    WrongNetwork { expected: String, found: String },
    #[error("signer bitmap is malformed (length or bits beyond the {0} members)")]
    BadBitmap(usize),
    #[error("{signers} signers, the threshold is {threshold}")]
    BelowThreshold { signers: u32, threshold: u32 },
    #[error("member {0}'s BLS key is invalid or lacks a valid proof of possession")]
    BadKey(usize),
    #[error("the aggregate signature does not verify")]
    BadSignature,
    #[error("the committee has no members, or more than {MAX_COMMITTEE}")]
    BadCommittee,
    #[error("the receipt's executor is not a member of the committee")]
    ExecutorNotMember,
    #[error(
        "a committee of {0} attests with the precommits of one consensus round; this attestation names no round"
    )]
    NoRound(usize),
    #[error("round {0} is reserved and names no consensus round")]
    BadRound(u32),
}

/// A committee whose keys were decoded, subgroup-checked and proof-of-possession-checked once;
/// keep it and verify many receipts against it (each verification is then one aggregation of
/// points and one two-pairing check).
#[derive(Debug, Clone)]
pub struct VerifiedCommittee {
    pub committee: Committee,
    keys: Vec<G2Affine>,
}

impl VerifiedCommittee {
    pub fn new(committee: Committee) -> Result<Self, CommitteeError> {
        if committee.members.is_empty() || committee.members.len() > MAX_COMMITTEE {
            return Err(CommitteeError::BadCommittee);
        }
        let mut keys = Vec::with_capacity(committee.members.len());
        for (i, m) in committee.members.iter().enumerate() {
            let key = public_key(&m.bls_public_key.0).ok_or(CommitteeError::BadKey(i))?;
            if !verify_proof_of_possession(&m.bls_public_key.0, &m.proof_of_possession.0) {
                return Err(CommitteeError::BadKey(i));
            }
            keys.push(key);
        }
        Ok(Self { committee, keys })
    }

    /// Indexes of the members set in `bitmap`.
    pub fn signers(&self, bitmap: &[u8]) -> Result<Vec<usize>, CommitteeError> {
        let n = self.keys.len();
        if bitmap.len() != n.div_ceil(8) {
            return Err(CommitteeError::BadBitmap(n));
        }
        let mut out = Vec::new();
        for (byte_index, byte) in bitmap.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    let i = byte_index * 8 + bit;
                    if i >= n {
                        return Err(CommitteeError::BadBitmap(n));
                    }
                    out.push(i);
                }
            }
        }
        Ok(out)
    }

    /// Checks an aggregated receipt: its id, program, epoch, network, bitmap, threshold and
    /// the aggregate signature (fast aggregate verify: all signers signed the same message).
    pub fn verify(&self, r: &AggregatedReceipt, network_id: &str) -> Result<(), CommitteeError> {
        if r.receipt.id() != r.id {
            return Err(CommitteeError::WrongId);
        }
        if r.receipt.program_id != self.committee.program_id {
            return Err(CommitteeError::WrongProgram {
                expected: self.committee.program_id,
                found: r.receipt.program_id,
            });
        }
        if r.epoch != self.committee.epoch {
            return Err(CommitteeError::WrongEpoch {
                expected: self.committee.epoch,
                found: r.epoch,
            });
        }
        if r.receipt.network_id != network_id {
            return Err(CommitteeError::WrongNetwork {
                expected: network_id.into(),
                found: r.receipt.network_id.clone(),
            });
        }
        let message = match r.round {
            // A committee of one: its executor's own signature of the receipt.
            None if self.keys.len() == 1 => receipt_signing_message(network_id, &r.id),
            None => return Err(CommitteeError::NoRound(self.keys.len())),
            Some(u32::MAX) => return Err(CommitteeError::BadRound(u32::MAX)),
            Some(round) => {
                let executor = self
                    .committee
                    .members
                    .iter()
                    .position(|m| m.endpoint_id == r.receipt.executor)
                    .ok_or(CommitteeError::ExecutorNotMember)?;
                precommit_message(&r.receipt, &r.id, round, executor as u32)
            }
        };
        self.verify_signatures(&message, &r.signers.0, &r.signature.0)
            .map(|_| ())
    }

    /// Checks that a threshold of members, those set in `bitmap`, signed `message`:
    /// `signature` is their aggregate over it. Returns the signers' indexes.
    pub fn verify_signatures(
        &self,
        message: &[u8],
        bitmap: &[u8],
        signature: &[u8],
    ) -> Result<Vec<usize>, CommitteeError> {
        let signers = self.signers(bitmap)?;
        if (signers.len() as u32) < self.committee.threshold {
            return Err(CommitteeError::BelowThreshold {
                signers: signers.len() as u32,
                threshold: self.committee.threshold,
            });
        }
        let mut aggregate = G2Projective::identity();
        for i in &signers {
            aggregate += self.keys[*i];
        }
        if verify_aggregate(&G2Affine::from(aggregate), message, signature) {
            Ok(signers)
        } else {
            Err(CommitteeError::BadSignature)
        }
    }
}

fn verify_aggregate(key: &G2Affine, message: &[u8], sig: &[u8]) -> bool {
    let Ok(arr) = <&[u8; 48]>::try_from(sig) else {
        return false;
    };
    let Some(sig) = Option::<G1Affine>::from(G1Affine::from_compressed(arr)) else {
        return false;
    };
    if bool::from(sig.is_identity()) || bool::from(key.is_identity()) {
        return false;
    }
    let h = <G1Projective as HashToCurve<ExpandMsgXmd<sha2::Sha256>>>::hash_to_curve(
        [message],
        SIG_DST,
    );
    let h = G1Affine::from(h);
    let neg_g2 = G2Prepared::from(-G2Affine::generator());
    let key = G2Prepared::from(*key);
    multi_miller_loop(&[(&sig, &neg_g2), (&h, &key)]).final_exponentiation() == Gt::identity()
}

/// Sets member `index` in a bitmap for `members` members.
pub fn set_signer(bitmap: &mut Vec<u8>, members: usize, index: usize) {
    bitmap.resize(members.div_ceil(8), 0);
    if index < members {
        bitmap[index / 8] |= 1 << (index % 8);
    }
}

/// `receipt_verify` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptVerification {
    pub valid: bool,
    /// Why not, when `valid` is false.
    pub reason: Option<String>,
    /// Endpoint ids of the members whose signatures are in the aggregate.
    pub signers: Vec<Hash32>,
    pub threshold: u32,
    pub committee_size: u32,
}

/// What a committee member recorded against another (`receipt_evidence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// A proposal this node refused: what the leader proposed and what this node computed
    /// from the same state root and input.
    Disagreement {
        height: u64,
        proposed: Box<ExecutionReceipt>,
        computed: Box<ExecutionReceipt>,
        recorded_at_ms: u64,
    },
    /// A member signed two different votes (or proposals) of one height and round.
    Equivocation(Equivocation),
}

impl Evidence {
    pub fn height(&self) -> u64 {
        match self {
            Evidence::Disagreement { height, .. } => *height,
            Evidence::Equivocation(e) => e.height,
        }
    }
}

/// Proof that committee member `member` signed two conflicting messages of one kind, height
/// and round: both messages as signed and their signatures. Anyone holding the committee
/// checks it with [`Equivocation::verify`]; a vote's bytes are [`vote_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equivocation {
    pub height: u64,
    pub round: u32,
    /// `prevote`, `precommit` or `proposal`.
    pub what: String,
    /// The member's index in the committee and its endpoint id.
    pub member_index: u32,
    pub member: Hash32,
    pub first: SignedBytes,
    pub second: SignedBytes,
    pub recorded_at_ms: u64,
}

/// A message exactly as it was signed, with its BLS signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBytes {
    pub message: HexBytes,
    pub signature: HexBytes,
}

impl Equivocation {
    /// Whether this proves misbehaviour of `member` in `committee` on `network_id`: two
    /// different messages of one kind, height and round (their signed bytes agree up to and
    /// including the vote type, or the round for proposals) in this program's domain, both
    /// signed by the member's key.
    pub fn verify(&self, committee: &VerifiedCommittee, network_id: &str) -> bool {
        let index = self.member_index as usize;
        let Some(member) = committee.committee.members.get(index) else {
            return false;
        };
        let tag: &[u8] = match self.what.as_str() {
            "prevote" | "precommit" => VOTE_TAG,
            "proposal" => b"onvm/tendermint-proposal/v1",
            _ => return false,
        };
        let mut prefix = Vec::new();
        prefix.extend_from_slice(tag);
        prefix.extend_from_slice(&(network_id.len() as u32).to_be_bytes());
        prefix.extend_from_slice(network_id.as_bytes());
        prefix.extend_from_slice(committee.committee.program_id.as_bytes());
        prefix.extend_from_slice(&self.height.to_be_bytes());
        prefix.extend_from_slice(&self.round.to_be_bytes());
        match self.what.as_str() {
            "prevote" => prefix.push(PREVOTE),
            "precommit" => prefix.push(PRECOMMIT),
            _ => {}
        }
        let (a, b) = (&self.first, &self.second);
        member.endpoint_id == self.member
            && a.message.0 != b.message.0
            && a.message.0.starts_with(&prefix)
            && b.message.0.starts_with(&prefix)
            && [a, b]
                .iter()
                .all(|s| verify_aggregate(&committee.keys[index], &s.message.0, &s.signature.0))
    }
}

/// Verifies a signed receipt against a committee: the executor's own signature, then (for a
/// committee of more than one) the attestation. Pure.
pub fn verify_signed(
    receipt: &crate::program::SignedReceipt,
    committee: &VerifiedCommittee,
    network_id: &str,
) -> ReceiptVerification {
    let size = committee.committee.members.len() as u32;
    let threshold = committee.committee.threshold;
    let fail = |reason: String| ReceiptVerification {
        valid: false,
        reason: Some(reason),
        signers: Vec::new(),
        threshold,
        committee_size: size,
    };
    if let Err(e) = crate::program::verify_receipt(receipt, Some(network_id), None) {
        return fail(format!("receipt: {e}"));
    }
    if !committee
        .committee
        .members
        .iter()
        .any(|m| m.endpoint_id == receipt.receipt.executor)
    {
        return fail("the executor is not a member of the committee".into());
    }
    let aggregated = receipt.aggregated();
    if size > 1 && receipt.attestation.is_none() {
        return fail("no committee attestation".into());
    }
    match committee.verify(&aggregated, network_id) {
        Ok(()) => ReceiptVerification {
            valid: true,
            reason: None,
            signers: committee
                .signers(&aggregated.signers.0)
                .unwrap_or_default()
                .into_iter()
                .map(|i| committee.committee.members[i].endpoint_id)
                .collect(),
            threshold,
            committee_size: size,
        },
        Err(e) => fail(e.to_string()),
    }
}

/// What `receipt_subscribe` delivers: committed receipts in this node's arrival order (the
/// cursor is the DAG arrival sequence), then possibly a typed close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReceiptStreamItem {
    Receipt {
        seq: u64,
        receipt: Box<crate::program::SignedReceipt>,
    },
    /// `lagged`: resubscribe with `from_seq = resume_from_seq` to continue without a gap.
    Closed {
        reason: String,
        resume_from_seq: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bft_quorum_is_a_valid_threshold() {
        for (k, q) in [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (7, 5), (16, 11)] {
            assert_eq!(check_threshold(k, q), Ok(()), "k={k}");
            for t in (0..=k as u32 + 1).filter(|t| *t != q) {
                let why = check_threshold(k, t).unwrap_err();
                assert!(why.contains(&format!("pass {q}")), "k={k} t={t}: {why}");
            }
        }
    }
}
