//! ONVM's [`Context`] for Malachite: what a height, a value, a vote and a committee are.
//!
//! A committee is fixed per program, so members are named by their index in it
//! ([`MemberIndex`]); the keys behind an index are the [`Verifier`](super::sign::Verifier)'s
//! business, which is why a "public key" here is the index again.

use std::fmt;

use malachitebft_core_types::{
    self as mc, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};

/// Rank of a member in the program's committee, `0..k`. Also its consensus address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberIndex(pub u32);

impl fmt::Display for MemberIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

impl mc::Address for MemberIndex {}

/// A program's call height: the position of a call in the program's sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    // A program's first call is at height 0, so the first height consensus runs is 0 as well.
    const INITIAL: Self = Height(0);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// Identifies a [`Value`]: BLAKE3 (derive-key mode, context [`VALUE_ID_CONTEXT`]) of the call id,
/// the receipt id and the proposer.
///
/// Not the bare receipt id: votes carry only the id, and the receipt id does not bind
/// `proposer`, which decides who leads the next height. Two values differing only in their
/// proposer must not share the precommits of one another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(pub [u8; 32]);

/// BLAKE3 derive-key context of [`ValueId`].
pub const VALUE_ID_CONTEXT: &str = onvm_rpc_api::committee::VALUE_ID_CONTEXT;

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What a height agrees on: one call and the receipt of its execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value {
    pub call_id: [u8; 32],
    /// Receipt id of the execution (binds the call and the state roots before and after).
    pub receipt_id: [u8; 32],
    /// The member that executed the call first and proposed it; it leads round 0 of the next
    /// height. A re-proposal in a later round keeps the original proposer (it is the same value).
    pub proposer: MemberIndex,
}

impl Value {
    /// The value's [`ValueId`] (what votes name).
    pub fn id(&self) -> ValueId {
        ValueId(onvm_rpc_api::committee::value_id(
            &self.call_id,
            &self.receipt_id,
            self.proposer.0,
        ))
    }
}

impl mc::Value for Value {
    type Id = ValueId;

    fn id(&self) -> ValueId {
        Value::id(self)
    }
}

/// A prevote or a precommit. It carries no extension (vote extensions are disabled).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    pub height: Height,
    pub round: Round,
    pub vote_type: VoteType,
    pub value: NilOrVal<ValueId>,
    pub voter: MemberIndex,
}

impl mc::Vote<OnvmContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<ValueId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<ValueId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &MemberIndex {
        &self.voter
    }
    fn extension(&self) -> Option<&SignedExtension<OnvmContext>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedExtension<OnvmContext>> {
        None
    }
    // Extensions are disabled for every height (`VoteExtensionPolicy::Disabled`): the core never
    // asks for one, and a vote that would carry one is refused before it gets here.
    fn extend(self, _extension: SignedExtension<OnvmContext>) -> Self {
        self
    }
}

/// The leader's proposal of `value` in `round`; `pol_round` is the round of the polka that
/// justifies a re-proposal (`Round::Nil` for a fresh value).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: Value,
    pub pol_round: Round,
    pub proposer: MemberIndex,
}

impl mc::Proposal<OnvmContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &Value {
        &self.value
    }
    fn take_value(self) -> Value {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &MemberIndex {
        &self.proposer
    }
}

/// Proposal parts are not used: the proposal carries the whole (small) value. The type is
/// uninhabited; the core still needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoParts {}

impl mc::ProposalPart<OnvmContext> for NoParts {
    fn is_first(&self) -> bool {
        match *self {}
    }
    fn is_last(&self) -> bool {
        match *self {}
    }
}

/// Signature bytes (48-byte BLS min_sig signatures in the node). A newtype because the core
/// wants signatures `Ord`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signature(pub Vec<u8>);

/// The signing scheme as the core sees it: opaque bytes. Signing and verification happen in
/// the instance through [`Signing`](super::sign::Signing), keyed by member index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpaqueScheme;

impl mc::SigningScheme for OpaqueScheme {
    type DecodingError = &'static str;
    type Signature = Signature;
    type PublicKey = MemberIndex;
    type PrivateKey = ();

    fn decode_signature(bytes: &[u8]) -> Result<Signature, Self::DecodingError> {
        Ok(Signature(bytes.to_vec()))
    }
    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.0.clone()
    }
    fn decode_public_key(bytes: &[u8]) -> Result<MemberIndex, Self::DecodingError> {
        let b: [u8; 4] = bytes.try_into().map_err(|_| "a member index is 4 bytes")?;
        Ok(MemberIndex(u32::from_be_bytes(b)))
    }
    fn encode_public_key(public_key: &MemberIndex) -> Vec<u8> {
        public_key.0.to_be_bytes().to_vec()
    }
}

/// One committee member, as a validator of power 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    index: MemberIndex,
}

impl mc::Validator<OnvmContext> for Member {
    fn address(&self) -> &MemberIndex {
        &self.index
    }
    fn public_key(&self) -> &MemberIndex {
        &self.index
    }
    fn voting_power(&self) -> VotingPower {
        1
    }
}

/// A program's committee for one height: `k` members of equal power, and the member that leads
/// round 0 (`first`; round `r` is led by `(first + r) % k`).
///
/// `first` lives here rather than in the context because it changes per height and the core
/// receives a validator set with every `StartHeight`: every member derives the same `first`
/// from the value decided at the previous height (its proposer), so all agree on the leaders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    members: Vec<Member>,
    first: u32,
}

impl Committee {
    /// A committee of `k` members led first by member 0; `None` when `k` is 0.
    pub fn new(k: u32) -> Option<Committee> {
        if k == 0 {
            return None;
        }
        let members = (0..k)
            .map(|i| Member {
                index: MemberIndex(i),
            })
            .collect();
        Some(Committee { members, first: 0 })
    }

    /// The same committee with round 0 led by `first` (taken modulo `k`).
    pub fn with_first(&self, first: MemberIndex) -> Committee {
        Committee {
            members: self.members.clone(),
            first: first.0 % self.k(),
        }
    }

    /// Number of members.
    pub fn k(&self) -> u32 {
        self.members.len() as u32
    }

    /// Members that may be faulty: ⌊(k−1)/3⌋.
    pub fn f(&self) -> u32 {
        (self.k() - 1) / 3
    }

    /// Quorum `q = k − f`: the smallest number `> 2k/3`, which is what the core's default
    /// threshold (`2f+1` as "more than two thirds of the power") computes with power 1 each.
    pub fn quorum(&self) -> u32 {
        self.k() - self.f()
    }

    /// Leader of `round` (round 0 for `Round::Nil`).
    pub fn leader(&self, round: Round) -> MemberIndex {
        let r = u64::from(round.as_u32().unwrap_or(0));
        MemberIndex(((u64::from(self.first) + r) % u64::from(self.k())) as u32)
    }

    pub fn contains(&self, member: MemberIndex) -> bool {
        member.0 < self.k()
    }
}

impl mc::ValidatorSet<OnvmContext> for Committee {
    fn count(&self) -> usize {
        self.members.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        u64::from(self.k())
    }
    fn get_by_address(&self, address: &MemberIndex) -> Option<&Member> {
        self.members.get(address.0 as usize)
    }
    fn get_by_index(&self, index: usize) -> Option<&Member> {
        self.members.get(index)
    }
}

/// The core's context. Stateless: the signing domain (network, program) is applied by the
/// instance when it signs and verifies, and the leader rotation comes with the [`Committee`].
#[derive(Clone, Copy, Debug, Default)]
pub struct OnvmContext;

impl mc::Context for OnvmContext {
    type Address = MemberIndex;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = Proposal;
    type Validator = Member;
    type ValidatorSet = Committee;
    // The core never reads durations: `ScheduleTimeout` names a (kind, round) and the instance
    // turns it into milliseconds with its own `TimeoutConfig`.
    type Timeouts = mc::LinearTimeouts;
    type Value = Value;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = OpaqueScheme;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a Committee,
        _height: Height,
        round: Round,
    ) -> &'a Member {
        let leader = validator_set.leader(round);
        // `leader` is `< k` and `k > 0` by construction of `Committee`.
        &validator_set.members[leader.0 as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: Value,
        pol_round: Round,
        address: MemberIndex,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<ValueId>,
        address: MemberIndex,
    ) -> Vote {
        Vote {
            height,
            round,
            vote_type: VoteType::Prevote,
            value: value_id,
            voter: address,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<ValueId>,
        address: MemberIndex,
    ) -> Vote {
        Vote {
            height,
            round,
            vote_type: VoteType::Precommit,
            value: value_id,
            voter: address,
        }
    }
}

/// Malachite's types instantiated with [`OnvmContext`].
pub type SignedVote = mc::SignedVote<OnvmContext>;
pub type SignedProposal = mc::SignedProposal<OnvmContext>;
pub type CommitCertificate = mc::CommitCertificate<OnvmContext>;
pub type PolkaCertificate = mc::PolkaCertificate<OnvmContext>;
pub type RoundCertificate = mc::RoundCertificate<OnvmContext>;
