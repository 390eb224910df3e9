//! One member's Tendermint instance for one program: Malachite's [`State`] driven through
//! `process!`, with every effect either answered on the spot (sign, verify) or turned into an
//! [`Action`] for the driver.
//!
//! Pure: no IO, no clock, no randomness. The driver feeds inputs (messages, timeouts, values it
//! executed, verdicts of re-executions) and performs the returned actions in order.

use std::collections::BTreeMap;

use malachitebft_core_consensus::{
    self as mcc, ConsensusMsg, Effect, Error, Input, LivenessMsg, LocallyProposedValue,
    MisbehaviorEvidence, Params, ProposedValue, Resumable, Resume, SignedConsensusMsg, State,
    ValuePayload,
};
use malachitebft_core_types::{
    CertificateError, Round, SignedMessage, Validity, ValueOrigin, VoteExtensionPolicy,
};

use super::certificate::{
    AggregateCertificate, CertError, Misbehavior, aggregate_certificate, check_commit, check_polka,
    check_round, verify_commit_certificate,
};
use super::codec::loggable;
use super::context::{
    CommitCertificate, Committee, Height, MemberIndex, OnvmContext, PolkaCertificate,
    RoundCertificate, Signature, SignedProposal, SignedVote, Value, ValueId,
};
use super::sign::{Domain, Signing, proposal_message, verify_proposal, verify_vote, vote_message};

/// Messages for heights in `(current, current + FUTURE_HEIGHTS]` (or for any height up to
/// `FUTURE_HEIGHTS` before the first `start_height`) are verified and kept until that height
/// starts; further ones are dropped (the sender's rebroadcast brings them again).
pub const FUTURE_HEIGHTS: u64 = 2;
/// At most this many future-height messages are kept per signer and height, so a faulty
/// member cannot crowd out the others' messages.
pub const MAX_BUFFERED_PER_SIGNER: usize = 16;

/// A message between members of the program's committee. Every one is signed (certificates
/// carry their voters' signatures), so it can be relayed by anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Proposal(SignedProposal),
    Vote(SignedVote),
    /// A quorum of prevotes for a value in a round, sent with a re-proposal so that members
    /// that missed those prevotes accept it.
    PolkaCertificate(PolkaCertificate),
    /// The votes that justify entering a round (round synchronization).
    RoundCertificate(RoundCertificate),
}

impl Message {
    /// The height the message is about.
    pub fn height(&self) -> Height {
        match self {
            Message::Proposal(p) => p.message.height,
            Message::Vote(v) => v.message.height,
            Message::PolkaCertificate(c) => c.height,
            Message::RoundCertificate(c) => c.height,
        }
    }
}

/// Timer kinds. A timer is named by (height, round, kind); the driver keys it by program too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeoutKind {
    /// Waiting for the round's proposal *and the verdict of its re-execution*.
    Propose,
    /// Waiting after a quorum of mixed prevotes.
    Prevote,
    /// Waiting after a quorum of mixed precommits.
    Precommit,
    /// Re-sends this member's last votes (re-armed for as long as the height runs).
    Rebroadcast,
}

/// Timeout durations: `base + delta × round`, capped at `max_ms`.
///
/// A round decides a slow call only once its propose timeout covers the leader's execution,
/// the trip of its proposal and every member's re-execution (twice the longest call,
/// `vm.max_call_ms`, plus the network's delays), or the members' hold during their own
/// execution and validation bridges the gap. Round 0's is short (a dead leader costs it) and
/// the per-round increase gets there ([`TimeoutConfig::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutConfig {
    pub propose_ms: u64,
    pub propose_delta_ms: u64,
    pub prevote_ms: u64,
    pub prevote_delta_ms: u64,
    pub precommit_ms: u64,
    pub precommit_delta_ms: u64,
    pub rebroadcast_ms: u64,
    pub max_ms: u64,
}

impl TimeoutConfig {
    /// The node's timeouts (`committee.view_timeout_ms`, `vm.max_call_ms`): round 0's propose
    /// timeout is `view_timeout_ms`, so a dead or paused leader costs about that; each later
    /// round adds half a call, so a legitimately slow call decides after a few rounds (with the
    /// members' hold during their own execution and validation). Prevote and precommit
    /// timeouts are a quarter of a view timeout: Tendermint arms them only once a quorum voted
    /// for mixed values, so they add to every round a silent leader costs.
    pub fn new(view_timeout_ms: u64, max_call_ms: u64) -> TimeoutConfig {
        let propose_ms = view_timeout_ms.max(1);
        let step = (propose_ms / 4).max(100);
        let slowest = max_call_ms.saturating_mul(2).saturating_add(propose_ms);
        TimeoutConfig {
            propose_ms,
            propose_delta_ms: (max_call_ms / 2).max(step),
            prevote_ms: step,
            prevote_delta_ms: step / 2,
            precommit_ms: step,
            precommit_delta_ms: step / 2,
            rebroadcast_ms: propose_ms.saturating_add(step),
            max_ms: slowest.saturating_mul(4).max(60_000),
        }
    }

    /// Duration of `kind` in `round`.
    pub fn duration_ms(&self, round: u32, kind: TimeoutKind) -> u64 {
        let r = u64::from(round);
        let (base, delta) = match kind {
            TimeoutKind::Propose => (self.propose_ms, self.propose_delta_ms),
            TimeoutKind::Prevote => (self.prevote_ms, self.prevote_delta_ms),
            TimeoutKind::Precommit => (self.precommit_ms, self.precommit_delta_ms),
            TimeoutKind::Rebroadcast => (self.rebroadcast_ms, 0),
        };
        base.saturating_add(delta.saturating_mul(r))
            .min(self.max_ms)
    }
}

/// What a member needs to know to run its instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where signatures are valid (network id, program id).
    pub domain: Domain,
    /// Committee size `k` (members are `0..k`).
    pub k: u32,
    /// This member.
    pub me: MemberIndex,
    pub timeouts: TimeoutConfig,
}

/// Why an instance cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    EmptyCommittee,
    NotAMember,
}

/// One write-ahead log record: an input that changed what this member may sign at `height`.
/// [`WalEntry::encode`] / [`WalEntry::decode`] give its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalEntry {
    pub height: Height,
    pub(crate) input: Input<OnvmContext>,
}

/// What the driver must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make `entry` durable **before performing any later action of the same list** (it
    /// precedes every vote or proposal it makes possible). The log holds the current height's
    /// entries: truncate it when the next height starts (after its `Decide` is stored).
    /// A failed append must stop the member (no further input): going on would let it sign
    /// what it might not remember.
    WalAppend(WalEntry),
    /// Send to every other member of the committee.
    Broadcast(Message),
    /// Arm timer (height, round, kind) to fire `after_ms` from now through
    /// [`Instance::on_timeout`]. Re-arming an armed timer restarts it.
    ScheduleTimeout {
        height: Height,
        round: u32,
        kind: TimeoutKind,
        after_ms: u64,
    },
    /// Disarm one timer.
    CancelTimeout {
        height: Height,
        round: u32,
        kind: TimeoutKind,
    },
    /// Disarm every timer of this instance.
    CancelAllTimeouts,
    /// This member leads `round` and must propose: execute the next call of the program on
    /// top of height `height - 1` and answer with [`Instance::propose`]. Answer within the
    /// propose timeout; a late answer is ignored (the round is over).
    GetValue { height: Height, round: u32 },
    /// Re-execute `value`'s call at `height` and answer with [`Instance::on_value_validated`].
    /// Until the answer comes the member does not prevote for it.
    Validate {
        height: Height,
        round: u32,
        value: Value,
    },
    /// `value` is decided at `height`, proven by `certificate` (a quorum's precommits of one
    /// round, aggregated). Store both durably, then start the next height with
    /// `value.proposer` as its first leader. May come again for a height after a restart:
    /// storing must be idempotent. Members still at this height learn it from the stored pair
    /// ([`Instance::on_decision`]).
    Decide {
        height: Height,
        value: Value,
        certificate: AggregateCertificate,
    },
    /// Members caught signing conflicting messages at a height that just ended.
    Evidence(Vec<Misbehavior>),
    /// The instance stopped (a non-determinism found in WAL replay, a broken invariant of the
    /// core): it ignores every input from now on. Needs an operator.
    Halt(String),
}

/// Where a value received in a proposal stands with the node's re-execution.
#[derive(Clone, Debug)]
enum Validation {
    Requested {
        round: Round,
        pol_round: Round,
        proposer: MemberIndex,
    },
    /// The core holds the verdict (it pairs it with every proposal of the value at this
    /// height).
    Answered,
}

/// Effects collected while the core runs, turned into actions once it yields control back.
enum Out {
    Action(Action),
    /// The core decided; the value is read from its state afterwards (`Decide` names only the
    /// value id).
    Decide(CommitCertificate),
}

/// Answers the core's effects. Holds everything but the core's state, which `process!` borrows.
struct Handler<'a, S> {
    domain: &'a Domain,
    signing: &'a S,
    me: MemberIndex,
    timeouts: &'a TimeoutConfig,
    /// The height the effects are about: the current one, or the new one after `StartRound`.
    height: Height,
    /// Entries already in the log (WAL replay): not appended again.
    logged: &'a [Input<OnvmContext>],
    out: Vec<Out>,
    /// Proposals of other members that the core just kept, read off its `WalAppend`s: it logs
    /// the proposals it keeps (and a proposal that differs from a kept one of the same value
    /// only in its polka round, as evidence), nothing else. Not every proposal whose signature
    /// it checked: one from the round's proposer is still dropped past the core's cap of
    /// distinct values per (height, round) (a Byzantine proposer equivocating), and so would
    /// be a verdict on its value given at that round.
    proposals: Vec<SignedProposal>,
    /// Set when an effect cannot be carried out safely: nothing after it is performed.
    fatal: Option<String>,
}

fn kind_of(kind: malachitebft_core_types::TimeoutKind) -> Option<TimeoutKind> {
    use malachitebft_core_types::TimeoutKind as K;
    match kind {
        K::Propose => Some(TimeoutKind::Propose),
        K::Prevote => Some(TimeoutKind::Prevote),
        K::Precommit => Some(TimeoutKind::Precommit),
        K::Rebroadcast => Some(TimeoutKind::Rebroadcast),
        // Only with a target time, which this module never sets.
        K::FinalizeHeight(_) => None,
    }
}

impl<S: Signing> Handler<'_, S> {
    fn push(&mut self, action: Action) {
        if self.fatal.is_none() {
            self.out.push(Out::Action(action));
        }
    }

    /// Never fails: an effect that cannot be carried out sets `fatal` instead (the core would
    /// only log an `Err` and go on).
    fn handle(&mut self, effect: Effect<OnvmContext>) -> Result<Resume<OnvmContext>, String> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.push(Action::CancelAllTimeouts);
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                if let (Some(kind), Some(round)) = (kind_of(t.kind), t.round.as_u32()) {
                    let height = self.height;
                    self.push(Action::CancelTimeout {
                        height,
                        round,
                        kind,
                    });
                }
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                if let (Some(kind), Some(round)) = (kind_of(t.kind), t.round.as_u32()) {
                    let height = self.height;
                    let after_ms = self.timeouts.duration_ms(round, kind);
                    self.push(Action::ScheduleTimeout {
                        height,
                        round,
                        kind,
                        after_ms,
                    });
                }
                r.resume_with(())
            }
            Effect::StartRound(height, _round, _proposer, _role, r) => {
                self.height = height;
                r.resume_with(())
            }
            Effect::PublishConsensusMsg(msg, r) => {
                self.push(Action::Broadcast(match msg {
                    SignedConsensusMsg::Vote(v) => Message::Vote(v),
                    SignedConsensusMsg::Proposal(p) => Message::Proposal(p),
                }));
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                self.push(Action::Broadcast(match msg {
                    LivenessMsg::Vote(v) => Message::Vote(v),
                    LivenessMsg::PolkaCertificate(c) => Message::PolkaCertificate(c),
                    LivenessMsg::SkipRoundCertificate(c) => Message::RoundCertificate(c),
                }));
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.push(Action::Broadcast(Message::Vote(v)));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.push(Action::Broadcast(Message::RoundCertificate(c)));
                r.resume_with(())
            }
            // The proposal message carries the whole value and the core publishes it right
            // after this effect: there are no parts to stream again.
            Effect::RestreamProposal(_, _, _, _, _, r) => r.resume_with(()),
            Effect::GetValue(height, round, _timeout, r) => {
                if let Some(round) = round.as_u32() {
                    self.push(Action::GetValue { height, round });
                }
                r.resume_with(())
            }
            // The sync protocol is not used (catch-up happens outside the core, from verified
            // aggregate certificates), so these never come.
            Effect::CertVerifiedSyncValue(_, _, r) => r.resume_with(()),
            Effect::CertRejectedSyncValue(_, _, _, r) => r.resume_with(()),
            Effect::Decide(certificate, _extensions, r) => {
                if self.fatal.is_none() {
                    self.out.push(Out::Decide(certificate));
                }
                r.resume_with(())
            }
            Effect::Finalize(_certificate, _extensions, evidence, r) => {
                let evidence = misbehavior(evidence);
                if !evidence.is_empty() {
                    self.push(Action::Evidence(evidence));
                }
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => {
                let sig = self.signing.sign(&vote_message(self.domain, &vote));
                r.resume_with(SignedMessage::new(vote, Signature(sig)))
            }
            Effect::SignProposal(proposal, r) => {
                let sig = self.signing.sign(&proposal_message(self.domain, &proposal));
                r.resume_with(SignedMessage::new(proposal, Signature(sig)))
            }
            Effect::VerifySignature(signed, public_key, r) => {
                let valid = match signed.message {
                    ConsensusMsg::Vote(vote) => {
                        let vote = SignedMessage::new(vote, signed.signature);
                        vote.message.voter == public_key
                            && verify_vote(self.signing, self.domain, &vote)
                    }
                    ConsensusMsg::Proposal(proposal) => {
                        let proposal = SignedMessage::new(proposal, signed.signature);
                        proposal.message.proposer == public_key
                            && verify_proposal(self.signing, self.domain, &proposal)
                    }
                };
                r.resume_with(valid)
            }
            Effect::VerifyCommitCertificate(cert, committee, params, r) => r.resume_with(
                check_commit(self.signing, &committee, self.domain, &cert, params.quorum),
            ),
            Effect::VerifyExtendedCommitCertificate(cert, committee, params, _policy, r) => {
                let result = match cert
                    .commit_signatures
                    .iter()
                    .find(|s| s.extension.is_some())
                {
                    Some(s) => Err(CertificateError::UnexpectedVoteExtension(s.address)),
                    None => check_commit(
                        self.signing,
                        &committee,
                        self.domain,
                        &cert.trim_vote_extensions(),
                        params.quorum,
                    ),
                };
                r.resume_with(result)
            }
            Effect::VerifyPolkaCertificate(cert, committee, params, r) => r.resume_with(
                check_polka(self.signing, &committee, self.domain, &cert, params.quorum),
            ),
            Effect::VerifyRoundCertificate(cert, committee, params, r) => r.resume_with(
                check_round(self.signing, &committee, self.domain, &cert, params),
            ),
            Effect::WalAppend(height, input, r) => {
                if !loggable(&input) {
                    // Logging it is impossible and skipping it would break the log's promise:
                    // stop here, before anything that depends on it is sent.
                    self.fatal = Some(format!("the core asked to log an unloggable {input:?}"));
                }
                // Also during WAL replay: a verdict asked for before the crash is asked again.
                if let Input::Proposal(p) = &input
                    && p.message.proposer != self.me
                {
                    self.proposals.push(p.clone());
                }
                if !self.logged.contains(&input) {
                    self.push(Action::WalAppend(WalEntry { height, input }));
                }
                r.resume_with(())
            }
            // Vote extensions are disabled at every height: the core neither asks for one nor
            // accepts a vote that carries one.
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => {
                r.resume_with(Err(mcc::VoteExtensionError::InvalidVoteExtension))
            }
        })
    }
}

fn misbehavior(evidence: MisbehaviorEvidence<OnvmContext>) -> Vec<Misbehavior> {
    let mut out = Vec::new();
    for (_, pairs) in &evidence.votes {
        for (a, b) in pairs {
            out.push(Misbehavior::DoubleVote(a.clone(), b.clone()));
        }
    }
    for (_, pairs) in &evidence.proposals {
        for (a, b) in pairs {
            out.push(Misbehavior::DoubleProposal(a.clone(), b.clone()));
        }
    }
    out
}

/// A message verified ahead of its height, and its signer.
struct Buffered {
    signer: MemberIndex,
    input: Input<OnvmContext>,
}

/// One member's consensus on one program. See the module documentation of
/// [`super`] for the protocol and the driver's duties.
pub struct Instance<S> {
    domain: Domain,
    committee: Committee,
    me: MemberIndex,
    timeouts: TimeoutConfig,
    signing: S,
    state: State<OnvmContext>,
    started: bool,
    /// Values of the current height sent for re-execution, by id.
    validations: BTreeMap<ValueId, Validation>,
    /// Verified messages of heights not started yet.
    future: BTreeMap<Height, Vec<Buffered>>,
    decided: Option<Value>,
    halted: Option<String>,
}

impl<S: Signing> Instance<S> {
    /// A member that has not started any height yet (see [`Instance::start_height`] and
    /// [`Instance::recover`]).
    pub fn new(config: Config, signing: S) -> Result<Self, ConfigError> {
        let committee = Committee::new(config.k).ok_or(ConfigError::EmptyCommittee)?;
        if !committee.contains(config.me) {
            return Err(ConfigError::NotAMember);
        }
        let params = Params {
            address: config.me,
            threshold_params: Default::default(),
            // Not `ProposalOnly`: there the core takes every proposed value as valid without
            // asking. Here the proposal carries the value, but validity comes only from the
            // node's re-execution (`on_value_validated`).
            value_payload: ValuePayload::ProposalAndParts,
            enabled: true,
        };
        // The core's own queue of early inputs is not used: early messages are verified and
        // kept per signer here (`future`), so its bounds only matter as a backstop.
        let state = State::new(OnvmContext, Height(0), committee.clone(), params, 4, 256);
        Ok(Instance {
            domain: config.domain,
            committee,
            me: config.me,
            timeouts: config.timeouts,
            signing,
            state,
            started: false,
            validations: BTreeMap::new(),
            future: BTreeMap::new(),
            decided: None,
            halted: None,
        })
    }

    /// The height being agreed on (the last one started).
    pub fn height(&self) -> Height {
        self.state.height()
    }

    /// The current round, `None` before the first `start_height`.
    pub fn round(&self) -> Option<u32> {
        self.state.round().as_u32()
    }

    /// The value decided at the current height, if any.
    pub fn decided(&self) -> Option<&Value> {
        self.decided.as_ref()
    }

    /// Why the instance stopped, if it did.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    pub fn me(&self) -> MemberIndex {
        self.me
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Timeouts for the timers scheduled from now on (e.g. the next height's).
    pub fn set_timeouts(&mut self, timeouts: TimeoutConfig) {
        self.timeouts = timeouts;
    }

    /// Starts `height`, whose round 0 is led by `first` (the sequencer uses `height % k`:
    /// leadership rotates per height). Call it once the previous height's
    /// `Decide` is durable: lazily is fine (when a call waits on the leader, or at the first
    /// message for `height`), since a started height runs rounds until something is decided.
    pub fn start_height(&mut self, height: Height, first: MemberIndex) -> Vec<Action> {
        self.start(height, first, false, &[])
    }

    /// Restarts after a crash, at `height` with its first leader, from the entries the log
    /// holds for `height`. Messages this member signed before the crash are re-derived and
    /// checked against the log: the recorded signatures are reused, and a re-derived message
    /// that differs (a non-determinism, which could make it sign two votes in one round)
    /// halts the instance instead of signing. The resulting actions re-send what was recorded
    /// and re-arm the timers of the round reached.
    pub fn recover(
        &mut self,
        height: Height,
        first: MemberIndex,
        entries: &[WalEntry],
    ) -> Vec<Action> {
        let logged: Vec<Input<OnvmContext>> = entries
            .iter()
            .filter(|e| e.height == height)
            .map(|e| e.input.clone())
            .collect();
        self.start(height, first, true, &logged)
    }

    fn start(
        &mut self,
        height: Height,
        first: MemberIndex,
        restart: bool,
        logged: &[Input<OnvmContext>],
    ) -> Vec<Action> {
        if self.halted.is_some() || (self.started && height <= self.state.height()) {
            return Vec::new();
        }
        self.started = true;
        self.validations.clear();
        self.decided = None;
        let committee = self.committee.with_first(first);
        let mut actions = self.run(
            Input::StartHeight(
                height,
                committee,
                restart,
                None,
                VoteExtensionPolicy::Disabled,
            ),
            &[],
        );
        if !logged.is_empty() {
            self.state.index_wal_entries(logged.iter());
            for input in logged {
                // The verdicts of re-executions are in the log: do not ask for them again.
                if let Input::ProposedValue(pv, _) = input {
                    self.validations.insert(pv.value.id(), Validation::Answered);
                }
                actions.extend(self.run(input.clone(), logged));
                if self.halted.is_some() {
                    return actions;
                }
            }
            self.state.reset_entries_index();
            actions = self.settle_replay(actions);
        }
        // Messages verified while the height had not started.
        let early = self.future.remove(&height).unwrap_or_default();
        self.future = self.future.split_off(&height);
        for b in early {
            actions.extend(self.run(b.input, &[]));
        }
        actions
    }

    /// After a replay: ask again only for what is still missing.
    fn settle_replay(&self, actions: Vec<Action>) -> Vec<Action> {
        let (height, round) = (self.state.height(), self.state.round());
        actions
            .into_iter()
            .filter(|a| match a {
                Action::Validate { value, .. } => matches!(
                    self.validations.get(&value.id()),
                    Some(Validation::Requested { .. })
                ),
                Action::GetValue {
                    height: h,
                    round: r,
                } => {
                    *h == height
                        && Round::new(*r) == round
                        && self
                            .state
                            .full_proposal_at_round_and_proposer(&height, round, &self.me)
                            .is_none()
                }
                _ => true,
            })
            .collect()
    }

    /// A message from the committee (relayed by anyone: signatures are checked).
    pub fn on_message(&mut self, msg: Message) -> Vec<Action> {
        match msg {
            Message::Proposal(p) => self.on_proposal(p),
            Message::Vote(v) => self.on_vote(v),
            Message::PolkaCertificate(c) => self.on_current(c.height, Input::PolkaCertificate(c)),
            Message::RoundCertificate(c) => self.on_current(c.height, Input::RoundCertificate(c)),
        }
    }

    pub fn on_proposal(&mut self, proposal: SignedProposal) -> Vec<Action> {
        let (height, signer) = (proposal.message.height, proposal.message.proposer);
        if !proposal.message.round.is_defined() || !self.committee.contains(signer) {
            return Vec::new();
        }
        if self.is_future(height) {
            if verify_proposal(&self.signing, &self.domain, &proposal) {
                self.buffer(height, signer, Input::Proposal(proposal));
            }
            return Vec::new();
        }
        self.on_current(height, Input::Proposal(proposal))
    }

    pub fn on_vote(&mut self, vote: SignedVote) -> Vec<Action> {
        let (height, signer) = (vote.message.height, vote.message.voter);
        if !vote.message.round.is_defined() || !self.committee.contains(signer) {
            return Vec::new();
        }
        if self.is_future(height) {
            if verify_vote(&self.signing, &self.domain, &vote) {
                self.buffer(height, signer, Input::Vote(vote));
            }
            return Vec::new();
        }
        self.on_current(height, Input::Vote(vote))
    }

    /// Answer to [`Action::GetValue`]: this member executed `call_id` at `height` and got
    /// `receipt_id`. Ignored unless the instance is still at that height and round.
    pub fn propose(
        &mut self,
        height: Height,
        round: u32,
        call_id: [u8; 32],
        receipt_id: [u8; 32],
    ) -> Vec<Action> {
        let value = Value {
            call_id,
            receipt_id,
            proposer: self.me,
        };
        let input = Input::Propose(LocallyProposedValue::new(height, Round::new(round), value));
        self.on_current(height, input)
    }

    /// Answer to [`Action::Validate`]: whether this node's re-execution of `value`'s call at
    /// `height` gave the same receipt id. Ignored for a value that was not asked about (or
    /// for another height).
    pub fn on_value_validated(&mut self, height: Height, value: Value, valid: bool) -> Vec<Action> {
        if !self.started || height != self.state.height() {
            return Vec::new();
        }
        let id = value.id();
        let Some(Validation::Requested {
            round,
            pol_round,
            proposer,
        }) = self.validations.get(&id).cloned()
        else {
            return Vec::new();
        };
        self.validations.insert(id, Validation::Answered);
        let pv = ProposedValue {
            height,
            round,
            valid_round: pol_round,
            proposer,
            value,
            validity: Validity::from_bool(valid),
        };
        let actions = self.on_current(height, Input::ProposedValue(pv, ValueOrigin::Consensus));
        // The verdict is given at the round of a proposal the core kept, so it keeps the
        // verdict too. Were it ever dropped, `Answered` would stop every later proposal of the
        // value from asking again, and this member could never prevote for it (a stall that
        // no timeout ends): forget the value instead, so the next proposal of it asks again.
        if self.halted.is_none()
            && height == self.state.height()
            && self
                .state
                .get_proposed_value_by_id(height, round, &id)
                .is_none()
        {
            self.validations.remove(&id);
        }
        actions
    }

    /// A decision of the current height learned from another member (who stored it from its
    /// own [`Action::Decide`]): checked, then handed over as a `Decide` of this member. For a
    /// member that fell behind (it missed precommits, or restarted after the others moved on):
    /// the others ignore messages of heights they finished, so it cannot decide by itself.
    /// The driver sends its stored decision of height `h` to a member that speaks about `h`
    /// while it is past `h`. Decisions of other heights are ignored (`Ok` with no action);
    /// a certificate that does not verify is an error (its sender lied).
    pub fn on_decision(
        &mut self,
        height: Height,
        value: Value,
        certificate: &AggregateCertificate,
    ) -> Result<Vec<Action>, CertError> {
        if !self.started
            || self.halted.is_some()
            || self.decided.is_some()
            || height != self.state.height()
        {
            return Ok(Vec::new());
        }
        if certificate.height != height.0 || certificate.value_id != value.id() {
            return Err(CertError::BadSignature);
        }
        verify_commit_certificate(&self.signing, &self.committee, &self.domain, certificate)?;
        self.decided = Some(value);
        Ok(vec![
            Action::CancelAllTimeouts,
            Action::Decide {
                height,
                value,
                certificate: certificate.clone(),
            },
        ])
    }

    /// Timer (height, round, kind) fired. Stale timers are ignored.
    pub fn on_timeout(&mut self, height: Height, round: u32, kind: TimeoutKind) -> Vec<Action> {
        let kind = match kind {
            TimeoutKind::Propose => malachitebft_core_types::TimeoutKind::Propose,
            TimeoutKind::Prevote => malachitebft_core_types::TimeoutKind::Prevote,
            TimeoutKind::Precommit => malachitebft_core_types::TimeoutKind::Precommit,
            TimeoutKind::Rebroadcast => malachitebft_core_types::TimeoutKind::Rebroadcast,
        };
        let timeout = malachitebft_core_types::Timeout::new(Round::new(round), kind);
        self.on_current(height, Input::TimeoutElapsed(timeout))
    }

    fn is_future(&self, height: Height) -> bool {
        if self.started {
            height > self.state.height()
        } else {
            true
        }
    }

    fn buffer(&mut self, height: Height, signer: MemberIndex, input: Input<OnvmContext>) {
        let base = if self.started {
            self.state.height().0
        } else {
            0
        };
        if self.halted.is_some() || height.0 > base.saturating_add(FUTURE_HEIGHTS) {
            return;
        }
        let queue = self.future.entry(height).or_default();
        if queue.iter().filter(|b| b.signer == signer).count() < MAX_BUFFERED_PER_SIGNER {
            queue.push(Buffered { signer, input });
        }
    }

    /// Feeds an input about `height`, if that is the current height.
    fn on_current(&mut self, height: Height, input: Input<OnvmContext>) -> Vec<Action> {
        if !self.started || self.halted.is_some() || height != self.state.height() {
            return Vec::new();
        }
        self.run(input, &[])
    }

    /// Runs one input through the core and turns what it did into actions.
    fn run(&mut self, input: Input<OnvmContext>, logged: &[Input<OnvmContext>]) -> Vec<Action> {
        if self.halted.is_some() {
            return Vec::new();
        }
        let mut h = Handler {
            domain: &self.domain,
            signing: &self.signing,
            me: self.me,
            timeouts: &self.timeouts,
            height: self.state.height(),
            logged,
            out: Vec::new(),
            proposals: Vec::new(),
            fatal: None,
        };
        // `Metrics` is `()` without the core's `metrics` feature (and not exported).
        let metrics = ();
        let state = &mut self.state;
        let result: Result<(), Error<OnvmContext>> = mcc::process!(
            input: input,
            state: state,
            metrics: &metrics,
            with: effect => h.handle(effect)
        );
        let Handler {
            out,
            proposals,
            fatal,
            ..
        } = h;

        let mut actions = Vec::with_capacity(out.len() + 1);
        for o in out {
            match o {
                Out::Action(a) => actions.push(a),
                // Already decided through `on_decision`: the same value (agreement), nothing new.
                Out::Decide(_) if self.decided.is_some() => {}
                Out::Decide(certificate) => match self.state.decided_value() {
                    Some((_, value)) if value.id() == certificate.value_id => {
                        match aggregate_certificate(&self.signing, &self.committee, &certificate) {
                            Ok(certificate) => {
                                self.decided = Some(value);
                                // A decided height needs no timer (the core would re-arm its
                                // rebroadcast forever, a cost for every idle program): members
                                // still deciding are helped with `on_decision` instead. Before
                                // `Decide`, since the driver may start the next height on it.
                                actions.push(Action::CancelAllTimeouts);
                                actions.push(Action::Decide {
                                    height: self.state.height(),
                                    value,
                                    certificate,
                                });
                            }
                            Err(e) => self.halt(&mut actions, format!("aggregation: {e}")),
                        }
                    }
                    _ => self.halt(&mut actions, "decision without its value".into()),
                },
            }
        }
        // Ask the node to re-execute every value of this height newly kept in a proposal (once
        // per value: validity is a property of the value at this height, whatever the round;
        // the core pairs a value with its proposals of every round). Only kept proposals: the
        // verdict is given at the round of one, where the core always has room for it.
        let height = self.state.height();
        for p in proposals {
            let m = &p.message;
            let id = m.value.id();
            if m.height != height || self.validations.contains_key(&id) {
                continue;
            }
            self.validations.insert(
                id,
                Validation::Requested {
                    round: m.round,
                    pol_round: m.pol_round,
                    proposer: m.proposer,
                },
            );
            actions.push(Action::Validate {
                height,
                round: m.round.as_u32().unwrap_or(0),
                value: m.value,
            });
        }
        if self.decided.is_some() {
            actions.retain(|a| !matches!(a, Action::ScheduleTimeout { .. }));
        }
        if let Some(reason) = fatal {
            self.halt(&mut actions, reason);
        }
        if let Err(e) = result {
            self.halt(&mut actions, e.to_string());
        }
        actions
    }

    fn halt(&mut self, actions: &mut Vec<Action>, reason: String) {
        if self.halted.is_none() {
            self.halted = Some(reason.clone());
            actions.push(Action::Halt(reason));
        }
    }
}
