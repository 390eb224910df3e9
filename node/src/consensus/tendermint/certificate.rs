//! Certificates: proofs that a quorum of one round voted alike, and proofs of misbehavior.
//!
//! The core hands out a [`CommitCertificate`] per decision: a list of (member, signature) of
//! precommits of one round for one value. Since precommits do not sign the voter
//! ([`super::sign`]), those signatures are over identical bytes and fold into an
//! [`AggregateCertificate`]: one BLS signature and a signer bitmap, 48 bytes plus `k/8`
//! whatever `k`. [`verify_commit_certificate`] is what anyone holding the committee's keys runs
//! before trusting a decision (a receipt).

use std::collections::BTreeSet;
use std::fmt;

use malachitebft_core_types::{
    CertificateError, NilOrVal, Round, RoundCertificateType, ThresholdParam, VoteType,
};

use super::context::{
    CommitCertificate, Committee, Height, MemberIndex, OnvmContext, PolkaCertificate,
    RoundCertificate, SignedProposal, SignedVote, ValueId,
};
use super::sign::{Domain, Verifier, proposal_message, verify_proposal, verify_vote, vote_bytes};

/// A decision's certificate in aggregate form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateCertificate {
    pub height: u64,
    pub round: u32,
    pub value_id: ValueId,
    /// Bit `i` (byte `i / 8`, bit `i % 8`, least significant first) is set when member `i`
    /// signed. Exactly `⌈k/8⌉` bytes, unused high bits clear.
    pub signers: Vec<u8>,
    /// The aggregate of the signers' precommit signatures.
    pub signature: Vec<u8>,
}

impl AggregateCertificate {
    /// The members whose bits are set, in order.
    pub fn signer_list(&self) -> Vec<MemberIndex> {
        let mut out = Vec::new();
        for (byte, bits) in self.signers.iter().enumerate() {
            for bit in 0..8 {
                if bits & (1 << bit) != 0 {
                    out.push(MemberIndex((byte * 8 + bit) as u32));
                }
            }
        }
        out
    }
}

/// Why a certificate is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertError {
    /// The signer bitmap does not have the committee's shape.
    BadBitmap,
    /// The round is `u32::MAX`, reserved for "no round".
    BadRound,
    /// A signer is not a member of the committee.
    UnknownSigner(MemberIndex),
    /// A member appears twice.
    DuplicateSigner(MemberIndex),
    /// Fewer distinct signers than the quorum.
    TooFewSigners { signed: u32, quorum: u32 },
    /// A signature does not verify (an individual one, or the aggregate).
    BadSignature,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::BadBitmap => write!(f, "malformed signer bitmap"),
            CertError::BadRound => write!(f, "reserved round"),
            CertError::UnknownSigner(m) => write!(f, "{m} is not a committee member"),
            CertError::DuplicateSigner(m) => write!(f, "{m} signed twice"),
            CertError::TooFewSigners { signed, quorum } => {
                write!(f, "{signed} signers, {quorum} needed")
            }
            CertError::BadSignature => write!(f, "a signature does not verify"),
        }
    }
}

impl std::error::Error for CertError {}

/// Folds the core's per-member certificate into one signature plus bitmap. The individual
/// signatures are not re-checked here (the core verified each precommit it counted); the
/// result can be checked with [`verify_commit_certificate`].
pub fn aggregate_certificate(
    verifier: &impl Verifier,
    committee: &Committee,
    cert: &CommitCertificate,
) -> Result<AggregateCertificate, CertError> {
    let round = cert.round.as_u32().ok_or(CertError::BadRound)?;
    let mut signers = vec![0u8; committee.k().div_ceil(8) as usize];
    let mut seen = BTreeSet::new();
    let mut sigs: Vec<&[u8]> = Vec::with_capacity(cert.commit_signatures.len());
    for s in &cert.commit_signatures {
        if !committee.contains(s.address) {
            return Err(CertError::UnknownSigner(s.address));
        }
        if !seen.insert(s.address) {
            return Err(CertError::DuplicateSigner(s.address));
        }
        signers[(s.address.0 / 8) as usize] |= 1 << (s.address.0 % 8);
        sigs.push(&s.signature.0);
    }
    let signature = verifier.aggregate(&sigs).ok_or(CertError::BadSignature)?;
    Ok(AggregateCertificate {
        height: cert.height.0,
        round,
        value_id: cert.value_id,
        signers,
        signature,
    })
}

/// Checks that at least `q = k − ⌊(k−1)/3⌋` distinct members of `committee` signed the
/// precommit of round `cert.round` at `cert.height` for `cert.value_id`, in `domain`.
///
/// One round only: the aggregate verifies against the bytes of that one round, so signatures
/// gathered from different rounds (where no round ever had a quorum) cannot pass.
pub fn verify_commit_certificate(
    verifier: &impl Verifier,
    committee: &Committee,
    domain: &Domain,
    cert: &AggregateCertificate,
) -> Result<(), CertError> {
    if cert.round == u32::MAX {
        return Err(CertError::BadRound);
    }
    let k = committee.k();
    if cert.signers.len() != k.div_ceil(8) as usize {
        return Err(CertError::BadBitmap);
    }
    let members = cert.signer_list();
    if let Some(m) = members.iter().find(|m| !committee.contains(**m)) {
        return Err(CertError::UnknownSigner(*m));
    }
    let quorum = committee.quorum();
    if (members.len() as u32) < quorum {
        return Err(CertError::TooFewSigners {
            signed: members.len() as u32,
            quorum,
        });
    }
    let msg = vote_bytes(
        domain,
        Height(cert.height),
        Round::new(cert.round),
        VoteType::Precommit,
        &NilOrVal::Val(cert.value_id),
    );
    if !verifier.verify_aggregate(&members, &msg, &cert.signature) {
        return Err(CertError::BadSignature);
    }
    Ok(())
}

/// Checks signed votes that a core certificate rebuilt: known, distinct signers, valid
/// signatures, and enough of them for `threshold` (power 1 each).
fn check_votes(
    verifier: &impl Verifier,
    committee: &Committee,
    domain: &Domain,
    votes: impl Iterator<Item = SignedVote>,
    threshold: ThresholdParam,
) -> Result<(), CertificateError<OnvmContext>> {
    let mut seen = BTreeSet::new();
    for vote in votes {
        let voter = vote.message.voter;
        if !committee.contains(voter) {
            return Err(CertificateError::UnknownValidator(voter));
        }
        if !seen.insert(voter) {
            return Err(CertificateError::DuplicateVote(voter));
        }
        if !verify_vote(verifier, domain, &vote) {
            return Err(CertificateError::VerificationError(None));
        }
    }
    let (signed, total) = (seen.len() as u64, u64::from(committee.k()));
    if !threshold.is_met(signed, total) {
        return Err(CertificateError::NotEnoughVotingPower {
            signed,
            total,
            expected: threshold.min_expected(total),
        });
    }
    Ok(())
}

/// The core's `VerifyCommitCertificate`: a quorum of precommits for the value, one round.
pub(crate) fn check_commit(
    verifier: &impl Verifier,
    committee: &Committee,
    domain: &Domain,
    cert: &CommitCertificate,
    quorum: ThresholdParam,
) -> Result<(), CertificateError<OnvmContext>> {
    let votes = cert.commit_signatures.iter().map(|s| {
        SignedVote::new(
            super::context::Vote {
                height: cert.height,
                round: cert.round,
                vote_type: VoteType::Precommit,
                value: NilOrVal::Val(cert.value_id),
                voter: s.address,
            },
            s.signature.clone(),
        )
    });
    check_votes(verifier, committee, domain, votes, quorum)
}

/// The core's `VerifyPolkaCertificate`: a quorum of prevotes for the value, one round.
pub(crate) fn check_polka(
    verifier: &impl Verifier,
    committee: &Committee,
    domain: &Domain,
    cert: &PolkaCertificate,
    quorum: ThresholdParam,
) -> Result<(), CertificateError<OnvmContext>> {
    check_votes(
        verifier,
        committee,
        domain,
        cert.votes(&OnvmContext),
        quorum,
    )
}

/// The core's `VerifyRoundCertificate`: to skip to a round, more than a third of the power
/// voting in it (any vote); to leave a round on a precommit timeout, a quorum of its
/// precommits (any value or nil) and nothing else.
pub(crate) fn check_round(
    verifier: &impl Verifier,
    committee: &Committee,
    domain: &Domain,
    cert: &RoundCertificate,
    params: malachitebft_core_types::ThresholdParams,
) -> Result<(), CertificateError<OnvmContext>> {
    let threshold = match cert.cert_type {
        RoundCertificateType::Skip => params.honest,
        RoundCertificateType::Precommit => {
            if let Some(s) = cert
                .round_signatures
                .iter()
                .find(|s| s.vote_type != VoteType::Precommit)
            {
                return Err(CertificateError::InvalidVoteType(s.address));
            }
            params.quorum
        }
    };
    check_votes(
        verifier,
        committee,
        domain,
        cert.votes(&OnvmContext),
        threshold,
    )
}

/// Proof that a member signed two conflicting messages of one height and round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehavior {
    /// Two votes of one type, height and round for different values (nil counts as a value).
    DoubleVote(SignedVote, SignedVote),
    /// Two different proposals for one height and round.
    DoubleProposal(SignedProposal, SignedProposal),
}

impl Misbehavior {
    /// The member it accuses.
    pub fn culprit(&self) -> MemberIndex {
        match self {
            Misbehavior::DoubleVote(a, _) => a.message.voter,
            Misbehavior::DoubleProposal(a, _) => a.message.proposer,
        }
    }
}

/// Whether `evidence` really proves misbehavior: one signer, one (height, round, kind), two
/// different signed contents, both signatures valid in `domain`.
pub fn verify_misbehavior(
    verifier: &impl Verifier,
    committee: &Committee,
    domain: &Domain,
    evidence: &Misbehavior,
) -> bool {
    match evidence {
        Misbehavior::DoubleVote(a, b) => {
            let (x, y) = (&a.message, &b.message);
            committee.contains(x.voter)
                && x.voter == y.voter
                && x.height == y.height
                && x.round == y.round
                && x.vote_type == y.vote_type
                && x.value != y.value
                && verify_vote(verifier, domain, a)
                && verify_vote(verifier, domain, b)
        }
        Misbehavior::DoubleProposal(a, b) => {
            let (x, y) = (&a.message, &b.message);
            committee.contains(x.proposer)
                && x.proposer == y.proposer
                && x.height == y.height
                && x.round == y.round
                && proposal_message(domain, x) != proposal_message(domain, y)
                && verify_proposal(verifier, domain, a)
                && verify_proposal(verifier, domain, b)
        }
    }
}
