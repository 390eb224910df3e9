//! One program's member as the node sees it: the Tendermint [`Instance`] plus the queue of
//! calls waiting to be sequenced, catch-up and the client replies. The same shape as
//! `pbft::Member`: [`Sequencer::handle`] takes an [`Event`] and the current time and returns
//! the [`Action`]s the driver performs, in order. Pure: no IO, no clock, no randomness.
//!
//! What this layer adds to the instance, and why (each point is a bug the PBFT glue had):
//!
//! * **Idle programs cost nothing.** A height starts only when this member holds a pending call,
//!   or at the first *verified* proposal or vote for it (someone else has work). Timers run only
//!   while a height runs (the instance's) or while calls wait or a catch-up is on (one tick).
//! * **Forwarding.** A call submitted at a non-leader is forwarded to the current round's leader,
//!   again at every round change and on every tick while it waits. A member holding a pending
//!   call starts the height, so if the leader never proposes it, its propose timeout fires, it
//!   prevotes nil and rounds move the lead (Tendermint's own rotation).
//! * **Failures that are not values.** A leader whose execution fails for a local reason
//!   (the VM's wall-clock kill at `max_call_ms`, cancellation) proposes nothing for that call:
//!   it sets it aside and tries the next pending call; no height is consumed. It runs the call
//!   again only after a tick ([`SequencerConfig::tick_ms`]) passed, so a local failure neither
//!   blocks the call forever (every honest member may have failed it once while faults lasted)
//!   nor makes the leader spin on it. It answers the client waiting here `Failed` only when
//!   nobody else can ever decide the call: this member never sent its id to anyone and never
//!   saw it in anyone's proposal ("unexposed"). Otherwise the call may still be decided
//!   elsewhere: the client gets no `Failed` (it gets `Finalized` if it is decided, or `Unknown`
//!   when the member gives up waiting, [`SequencerConfig::pending_ttl_ms`]).
//! * **Exactly once.** A decided call id is never proposed again by this leader nor validated
//!   by this member, as far as its bounded memory goes ([`RECENT_CALLS`] ids); beyond that the
//!   glue's store is the authority: the glue refuses to execute or validate a call its store
//!   already committed (`ExecuteFailed` / `Validated { valid: false }`). The sequencer's set is
//!   the fast path and covers calls decided but not yet applied; the store covers history.
//! * **Catch-up that does not stall.** A member that hears (verified) of a height above its
//!   own asks everyone for the decisions it lacks, and asks again on every tick until it has
//!   them. Decisions are adopted only with a certificate that verifies.
//! * **Slow calls.** The VM kills a call at `max_call_ms` (a killed call is a local failure, see
//!   above), so an execution and a re-execution each take at most `max_call_ms`. Round 0's
//!   propose timeout is short (the view timeout, so a dead leader costs little) and each later
//!   round adds half a call ([`TimeoutConfig::new`]), so a slow call decides after a few rounds.
//!   And a member holds its propose timeout while its own execution (as leader) or validation
//!   (of the round's first proposal) runs: that delay is its own, it says nothing about the
//!   leader.
//! * **Persist failures stop the member** ([`Event::PersistFailed`] → [`Action::Stop`]): the
//!   driver must not perform anything after a failed `Persist`.
//! * **Leader rotation (no censorship rule).** Round `r` of height `h` is led by
//!   `(h + r) % k`: round 0's leader rotates with every height (`first(h) = (first(h − 1) + 1)
//!   % k`), whoever proposed the value decided before. Leaders propose their oldest pending call
//!   first (FIFO), and a member forwards its clients' calls to the leader of every round it
//!   enters. Why this suffices against a censoring (Byzantine) leader, with no rule that
//!   judges leaders: after the network heals, every height the Byzantine member leads costs at
//!   most its rounds' timeouts, and within any `k` consecutive heights every honest member
//!   leads round 0 once. An honest leader that holds a call proposes it unless older calls are
//!   ahead of it, and the honest round 0 of a height whose honest members start it together
//!   decides (its propose timeout covers the execution, the network and the re-execution). A
//!   call's place in its honest leaders' FIFO queues only improves (new calls queue behind it;
//!   a forwarder may occupy at most [`MAX_PENDING_PER_PEER`] entries), so it is decided after a
//!   bounded number of heights. The previous design kept a healthy leader in place and let
//!   members holding "overdue" calls refuse its values; that rule fought slow calls (a member
//!   refusing every value of the first leader while its own slow call was still running
//!   elsewhere) and needed timing assumptions about arrival times; rotation needs none. The
//!   cost: a crashed member costs one propose timeout every `k` heights instead of once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use malachitebft_core_types::Round;

use super::certificate::{AggregateCertificate, Misbehavior, verify_commit_certificate};
use super::context::{Committee, Height, MemberIndex, Value, ValueId};
use super::instance::{
    Action as InstanceAction, Config, ConfigError, Instance, Message as ConsensusMessage,
    TimeoutConfig, TimeoutKind, WalEntry,
};
use super::sign::{Domain, Signing, verify_proposal, verify_vote};

/// Client-chosen call id; a retry of the same call carries the same id.
pub type CallId = [u8; 32];
/// Receipt id of an execution (binds the call and the state roots before and after).
pub type ReceiptId = [u8; 32];

/// Most calls waiting at one member; submissions beyond are refused.
pub const MAX_PENDING: usize = 4096;
/// Most entries one forwarding member may occupy in the queue (a Forward flood is bounded).
pub const MAX_PENDING_PER_PEER: usize = 256;
/// Most call ids in one Forward (extra ones are ignored).
pub const MAX_FORWARD: usize = 64;
/// Decided call ids remembered for exactly-once (the glue's store has the rest).
pub const RECENT_CALLS: usize = 4096;
/// Decisions kept in memory to answer catch-up; older ones come from the glue's store
/// ([`Action::SendStoredDecisions`]).
pub const RECENT_DECISIONS: usize = 64;
/// Most decisions sent for one request, and how far ahead early decisions are kept.
pub const SYNC_BATCH: u64 = 16;
/// Failed executions remembered, so a leader does not retry a call that failed on it.
const RECENT_FAILURES: usize = 1024;

/// A decided height: its value and the aggregated precommits of one round that prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub height: Height,
    pub value: Value,
    pub certificate: AggregateCertificate,
}

/// Messages between members of one program's committee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Tendermint's own messages (signed; relayable by anyone).
    Consensus(ConsensusMessage),
    /// Calls submitted to the sender that the receiver (a leader) should sequence.
    Forward { call_ids: Vec<CallId> },
    /// "Send me the decisions from this height on."
    DecisionRequest { from_height: Height },
    /// A decided height with its certificate (checked before it is adopted).
    Decision(Decided),
}

/// What a client finally hears about its call from this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    Finalized {
        height: Height,
        receipt_id: ReceiptId,
    },
    /// Never decided, and it never will be (nobody else knows the call): retry if you like.
    Failed { reason: String },
    /// This member stopped waiting (it gave up, or stopped); the call may still be decided:
    /// retry with the same id to learn its receipt. Not in PBFT's `CallResult`: that one said
    /// `Failed` here, which was a lie when the call was decided later.
    Unknown { reason: String },
}

/// The timers of a member. The driver never cancels one: a stale timer is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerId {
    /// One of the instance's timeouts.
    Consensus {
        height: Height,
        round: u32,
        kind: TimeoutKind,
    },
    /// Retransmission of forwards and catch-up requests, expiry of old calls.
    Tick,
}

/// One durable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Append to the write-ahead log of the current height.
    Wal(WalEntry),
    /// Store the decision (idempotent), then truncate the log: entries of heights up to
    /// `decided.height` are no longer needed, so the log never grows with history.
    Decision(Decided),
}

/// Inputs of the sequencer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client call reached this member (its payload stays with the glue).
    Submit { call_id: CallId },
    /// A message from committee member `from` (authenticated by the transport).
    Message { from: MemberIndex, msg: Message },
    /// The leader's execution asked by [`Action::Execute`] gave `receipt_id`.
    Executed {
        height: Height,
        round: u32,
        call_id: CallId,
        receipt_id: ReceiptId,
    },
    /// The leader's execution did not produce a value. `reproducible: false` for local causes
    /// (wall-clock timeout, cancellation, missing payload, already committed): never a value.
    ExecuteFailed {
        height: Height,
        round: u32,
        call_id: CallId,
        reason: String,
        reproducible: bool,
    },
    /// The glue's state already holds `height` (applied from elsewhere): catch up.
    Behind { height: Height },
    /// The glue refused to execute `call_id`: its store already committed it at `height`
    /// (exactly once across restarts and beyond [`RECENT_CALLS`]). Not a failure: the call
    /// is decided, and a client waiting here hears `Finalized`.
    AlreadyCommitted {
        call_id: CallId,
        height: Height,
        receipt_id: ReceiptId,
    },
    /// Verdict of [`Action::Validate`].
    Validated {
        height: Height,
        round: u32,
        value: Value,
        valid: bool,
    },
    /// A timer set with [`Action::SetTimer`] fired.
    Timer(TimerId),
    /// Rebuild after a (re)start from what is durable: the log's entries and the last decided
    /// height, which the glue has applied (it re-applies it first: `Commit` is idempotent).
    Restart {
        wal: Vec<WalEntry>,
        last: Option<Decided>,
    },
    /// The glue applied decided `height` to its state (executions of `height + 1` may run).
    Committed { height: Height },
    /// A `Persist` failed: the member stops (it could not remember what it signs).
    PersistFailed { reason: String },
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: MemberIndex,
        msg: Message,
    },
    /// To every other member.
    Broadcast {
        msg: Message,
    },
    /// Make durable **before performing any later action of this list**; on failure feed
    /// [`Event::PersistFailed`] and perform nothing more.
    Persist(Record),
    /// As leader: execute `call_id` on top of `height - 1`; answer `Executed`, `ExecuteFailed`
    /// or `Behind`.
    Execute {
        height: Height,
        round: u32,
        call_id: CallId,
    },
    /// Re-execute `value`'s call at `height`; answer `Validated`.
    Validate {
        height: Height,
        round: u32,
        value: Value,
    },
    /// Apply the decided height (durable by the `Persist` before it). Idempotent. Answer
    /// `Committed` once applied.
    Commit(Decided),
    /// Answer the client(s) waiting on this member for `call_id`.
    Reply {
        call_id: CallId,
        result: CallResult,
    },
    /// Deliver `Event::Timer(timer)` at `at_ms`.
    SetTimer {
        at_ms: u64,
        timer: TimerId,
    },
    /// Send `to` the stored decisions of heights `from_height..until` (older than what the
    /// sequencer keeps in memory), each as a [`Message::Decision`].
    SendStoredDecisions {
        to: MemberIndex,
        from_height: Height,
        until: Height,
    },
    /// Members caught signing conflicting messages.
    Evidence(Vec<Misbehavior>),
    /// The member stopped for good (until the glue restarts it): a failed persist, or the
    /// instance halted. Every later event is ignored.
    Stop(String),
}

/// Static configuration of one member.
#[derive(Clone, Debug)]
pub struct SequencerConfig {
    pub instance: Config,
    /// Period of the tick (forward retransmission, catch-up requests).
    pub tick_ms: u64,
    /// A call still pending after this long is dropped (its client, if waiting here, hears
    /// `Unknown`): bounds memory and the effect of bogus forwarded ids.
    pub pending_ttl_ms: u64,
    #[cfg(test)]
    pub planted: PlantedBugs,
}

impl SequencerConfig {
    /// A member's configuration from its instance's timeouts: one tick per propose timeout,
    /// expiry after thirty.
    pub fn with_timeouts(
        domain: Domain,
        k: u32,
        me: MemberIndex,
        timeouts: TimeoutConfig,
    ) -> SequencerConfig {
        let p = timeouts.propose_ms.max(1);
        SequencerConfig {
            instance: Config {
                domain,
                k,
                me,
                timeouts,
            },
            tick_ms: p,
            pending_ttl_ms: p.saturating_mul(30),
            #[cfg(test)]
            planted: PlantedBugs::default(),
        }
    }
}

/// Bugs the simulator must catch, switched on one at a time by the tests.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Answer `Failed` to the local client whenever the own execution fails, even for a call
    /// others know (PBFT's Abandon).
    pub fail_exposed_calls: bool,
    /// Forget decided call ids (the leader may propose one again; the glue check is off too).
    pub forget_decided_calls: bool,
    /// Ask for the decisions missing at a height once, never again (not on ticks, not on
    /// later messages).
    pub request_decisions_once: bool,
    /// Keep going after a failed persist.
    pub swallow_persist_failure: bool,
    /// The previous design's sticky leader without its censorship rule: round 0 of the next
    /// height is led by the proposer of the value just decided, not by the next member.
    pub sticky_leader: bool,
    /// Adopt decisions without checking their certificate.
    pub trust_decisions: bool,
    /// Byzantine behaviour, not a bug: never propose a call forwarded by another member.
    pub censor: bool,
}

#[derive(Clone, Debug)]
struct Pending {
    call_id: CallId,
    since_ms: u64,
    /// Sent to another member, received from one, or seen in a proposal: someone else may
    /// decide it, so this member never answers `Failed` for it.
    exposed: bool,
    /// Who forwarded it (None: a local client).
    source: Option<MemberIndex>,
}

/// A bounded set that forgets its oldest entries.
#[derive(Debug, Default)]
struct Recent<K: std::hash::Hash + Eq + Copy, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Copy, V> Recent<K, V> {
    fn new(cap: usize) -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
    fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }
}

/// One member of one program's committee. See the module documentation.
pub struct Sequencer<S> {
    config: SequencerConfig,
    instance: Instance<S>,
    /// The same keys as the instance's, to check decisions and messages it does not hold.
    verifier: S,
    committee: Committee,
    /// Next height to decide; `first` leads its round 0.
    height: Height,
    first: MemberIndex,
    /// The instance runs `height`.
    started: bool,
    /// Heights the glue applied: executions and validations of `height` wait for
    /// `applied == height`.
    applied: Height,
    /// Highest height known to exist (`> height`: catching up).
    known: Height,
    armed: BTreeMap<(Height, u32, TimeoutKind), u64>,
    tick_at: Option<u64>,
    pending: VecDeque<Pending>,
    /// Clients waiting here, with when they came.
    waiting: HashMap<CallId, u64>,
    decided_calls: Recent<CallId, (Height, ReceiptId)>,
    /// Calls whose execution failed here, with when: not run again here before a tick passed.
    failed_here: Recent<CallId, u64>,
    recent: VecDeque<Decided>,
    future_decisions: BTreeMap<Height, Decided>,
    /// The instance asked for a value for (height, round) and has none yet.
    wanted: Option<(Height, u32)>,
    executing: Option<(Height, u32, CallId)>,
    /// A value this leader executed at `height` for a round that ended: proposed as is.
    ready: Option<(Height, CallId, ReceiptId)>,
    /// Validations asked of the glue at `height`: value id → round.
    validating: BTreeMap<ValueId, u32>,
    /// Round → the first value asked about in it (only its validation holds the timer).
    first_in_round: BTreeMap<u32, ValueId>,
    /// Round → the first call this leader executed in it (only that execution holds the
    /// timer: a leader retrying failed calls one tick apart would otherwise hold it forever).
    first_execution: BTreeMap<u32, CallId>,
    /// Validations waiting for the glue to apply the previous height.
    deferred: Vec<(u32, Value)>,
    /// Call ids seen in proposals at the current height.
    proposed_here: HashSet<CallId>,
    forwarded_round: Option<(Height, u32)>,
    last_request_ms: Option<u64>,
    #[cfg(test)]
    requested_for: Option<Height>,
    served: HashMap<(MemberIndex, Height), u64>,
    stopped: Option<String>,
    now: u64,
    out: Vec<Action>,
}

impl<S: Signing + Clone> Sequencer<S> {
    /// A member that has not restarted yet: the first event must be [`Event::Restart`] (with
    /// nothing in it for a fresh member).
    pub fn new(config: SequencerConfig, signing: S) -> Result<Self, ConfigError> {
        let verifier = signing.clone();
        let instance = Instance::new(config.instance.clone(), signing)?;
        let committee = instance.committee().clone();
        Ok(Sequencer {
            config,
            instance,
            verifier,
            committee,
            height: Height(0),
            first: MemberIndex(0),
            started: false,
            applied: Height(0),
            known: Height(0),
            armed: BTreeMap::new(),
            tick_at: None,
            pending: VecDeque::new(),
            waiting: HashMap::new(),
            decided_calls: Recent::new(RECENT_CALLS),
            failed_here: Recent::new(RECENT_FAILURES),
            recent: VecDeque::new(),
            future_decisions: BTreeMap::new(),
            wanted: None,
            executing: None,
            ready: None,
            validating: BTreeMap::new(),
            first_in_round: BTreeMap::new(),
            first_execution: BTreeMap::new(),
            deferred: Vec::new(),
            proposed_here: HashSet::new(),
            forwarded_round: None,
            last_request_ms: None,
            #[cfg(test)]
            requested_for: None,
            served: HashMap::new(),
            stopped: None,
            now: 0,
            out: Vec::new(),
        })
    }

    pub fn me(&self) -> MemberIndex {
        self.config.instance.me
    }
    pub fn k(&self) -> u32 {
        self.committee.k()
    }
    /// Next height to decide.
    pub fn height(&self) -> Height {
        self.height
    }
    /// Highest height this member knows exists (above `height`: it is catching up).
    pub fn known(&self) -> Height {
        self.known
    }
    /// Whether a height is running (timers armed).
    pub fn is_running(&self) -> bool {
        self.started
    }
    /// Calls waiting to be sequenced here.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }
    /// Whether `call_id` is waiting here.
    pub fn holds(&self, call_id: &CallId) -> bool {
        self.pending.iter().any(|p| p.call_id == *call_id)
    }
    /// Why the member stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }
    /// Whether the timer/tick machinery is idle (nothing armed).
    pub fn is_idle(&self) -> bool {
        !self.started && self.tick_at.is_none() && self.armed.is_empty()
    }
    /// The queue entry of `call_id`, for traces.
    #[cfg(test)]
    pub fn describe(&self, call_id: &CallId) -> String {
        let p = self.pending.iter().find(|p| p.call_id == *call_id);
        format!(
            "{p:?} first={} round={} wanted={:?} executing={:?} decided={}",
            self.first,
            self.round(),
            self.wanted,
            self.executing.map(|e| (e.0, e.1)),
            self.decided_calls.contains(call_id)
        )
    }
    #[cfg(test)]
    pub fn planted(&self) -> PlantedBugs {
        self.config.planted
    }

    /// Processes one event; the returned actions must be performed in order.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> Vec<Action> {
        self.now = now_ms;
        if self.stopped.is_some() {
            if let Event::Submit { call_id } = event {
                return vec![Action::Reply {
                    call_id,
                    result: CallResult::Unknown {
                        reason: "the committee member stopped".into(),
                    },
                }];
            }
            return Vec::new();
        }
        match event {
            Event::Submit { call_id } => self.on_submit(call_id),
            Event::Message { from, msg } => self.on_message(from, msg),
            Event::Executed {
                height,
                round,
                call_id,
                receipt_id,
            } => self.on_executed(height, round, call_id, receipt_id),
            Event::ExecuteFailed {
                height,
                round,
                call_id,
                reason,
                reproducible: _,
            } => self.on_execute_failed(height, round, call_id, reason),
            Event::Behind { height } => self.on_behind(height),
            Event::AlreadyCommitted {
                call_id,
                height,
                receipt_id,
            } => self.on_already_committed(call_id, height, receipt_id),
            Event::Validated {
                height,
                round: _,
                value,
                valid,
            } => self.on_validated(height, value, valid),
            Event::Timer(timer) => self.on_timer(timer),
            Event::Restart { wal, last } => self.on_restart(wal, last),
            Event::Committed { height } => self.on_committed(height),
            Event::PersistFailed { reason } => {
                #[cfg(test)]
                if self.config.planted.swallow_persist_failure {
                    return std::mem::take(&mut self.out);
                }
                self.stop(format!("persisting consensus state failed: {reason}"));
            }
        }
        if self.stopped.is_none() {
            self.maybe_start();
            self.forward_on_round_change();
            self.arm_tick();
        }
        std::mem::take(&mut self.out)
    }

    // ----- helpers ---------------------------------------------------------------------------

    fn emit(&mut self, action: Action) {
        self.out.push(action);
    }

    fn stop(&mut self, reason: String) {
        if self.stopped.is_none() {
            self.stopped = Some(reason.clone());
            self.emit(Action::Stop(reason));
        }
    }

    fn round(&self) -> u32 {
        if self.started {
            self.instance.round().unwrap_or(0)
        } else {
            0
        }
    }

    fn leader(&self, round: u32) -> MemberIndex {
        self.committee
            .with_first(self.first)
            .leader(Round::new(round))
    }

    fn planted_forget_decided(&self) -> bool {
        #[cfg(test)]
        return self.config.planted.forget_decided_calls;
        #[cfg(not(test))]
        false
    }

    fn is_decided(&self, call_id: &CallId) -> bool {
        !self.planted_forget_decided() && self.decided_calls.contains(call_id)
    }

    /// Round 0's leader of `height`: the next member after the previous height's
    /// (module doc, "Leader rotation").
    fn first_of(&self, height: Height, decided: &Value) -> MemberIndex {
        #[cfg(test)]
        if self.config.planted.sticky_leader {
            return decided.proposer;
        }
        let _ = decided;
        MemberIndex((height.0 % u64::from(self.k())) as u32)
    }

    /// This member's own execution of `call_id` failed less than a tick ago: not now.
    fn failed_recently(&self, call_id: &CallId) -> bool {
        self.failed_here
            .get(call_id)
            .is_some_and(|at| self.now < at.saturating_add(self.config.tick_ms))
    }

    /// Adds a call to the queue; false when it is full.
    fn add_pending(&mut self, call_id: CallId, source: Option<MemberIndex>) -> bool {
        if let Some(p) = self.pending.iter_mut().find(|p| p.call_id == call_id) {
            match source {
                Some(_) => p.exposed = true,
                // A local client's call is this member's to forward, whoever sent it first.
                None => p.source = None,
            }
            return true;
        }
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        if let Some(from) = source
            && self
                .pending
                .iter()
                .filter(|p| p.source == Some(from))
                .count()
                >= MAX_PENDING_PER_PEER
        {
            return false;
        }
        self.pending.push_back(Pending {
            call_id,
            since_ms: self.now,
            exposed: source.is_some(),
            source,
        });
        true
    }

    fn mark_exposed(&mut self, call_id: &CallId) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.call_id == *call_id) {
            p.exposed = true;
        }
    }

    /// Calls to forward: this member's own clients' (a member never relays what others
    /// forwarded to it: their origin does, so a flood is not amplified), not decided, oldest
    /// first.
    fn forwardable(&self) -> Vec<CallId> {
        self.pending
            .iter()
            .filter(|p| p.source.is_none() && !self.is_decided(&p.call_id))
            .take(MAX_FORWARD)
            .map(|p| p.call_id)
            .collect()
    }

    // ----- the instance -----------------------------------------------------------------------

    /// Turns the instance's actions into the sequencer's.
    fn absorb(&mut self, actions: Vec<InstanceAction>) {
        for a in actions {
            if self.stopped.is_some() {
                return;
            }
            match a {
                InstanceAction::WalAppend(entry) => self.emit(Action::Persist(Record::Wal(entry))),
                InstanceAction::Broadcast(msg) => self.emit(Action::Broadcast {
                    msg: Message::Consensus(msg),
                }),
                InstanceAction::ScheduleTimeout {
                    height,
                    round,
                    kind,
                    after_ms,
                } => {
                    let at_ms = self.now.saturating_add(after_ms);
                    self.armed.insert((height, round, kind), at_ms);
                    self.emit(Action::SetTimer {
                        at_ms,
                        timer: TimerId::Consensus {
                            height,
                            round,
                            kind,
                        },
                    });
                }
                InstanceAction::CancelTimeout {
                    height,
                    round,
                    kind,
                } => {
                    self.armed.remove(&(height, round, kind));
                }
                InstanceAction::CancelAllTimeouts => self.armed.clear(),
                InstanceAction::GetValue { height, round } => {
                    if height == self.height {
                        self.wanted = Some((height, round));
                        self.try_propose();
                    }
                }
                InstanceAction::Validate {
                    height,
                    round,
                    value,
                } => self.on_validate_request(height, round, value),
                InstanceAction::Decide {
                    height,
                    value,
                    certificate,
                } => self.decide(Decided {
                    height,
                    value,
                    certificate,
                }),
                InstanceAction::Evidence(e) => self.emit(Action::Evidence(e)),
                InstanceAction::Halt(reason) => self.stop(format!("consensus halted: {reason}")),
            }
        }
    }

    fn maybe_start(&mut self) {
        if !self.started && !self.pending.is_empty() {
            self.start_height();
        }
    }

    fn start_height(&mut self) {
        if self.started || self.stopped.is_some() {
            return;
        }
        self.started = true;
        let actions = self.instance.start_height(self.height, self.first);
        self.absorb(actions);
    }

    /// Forwards the queue to the leader of a round this member just entered, once per round.
    fn forward_on_round_change(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let key = (self.height, self.round());
        if self.forwarded_round == Some(key) {
            return;
        }
        self.forwarded_round = Some(key);
        let call_ids = self.forwardable();
        if call_ids.is_empty() {
            return;
        }
        self.forward_to_leaders(key.1, call_ids);
    }

    /// Sends `call_ids` to every other member, the leader of `round` first. Every member then
    /// holds the calls and starts the height, and its timers, at once: if the round's leader
    /// is dead or paused, the nil prevotes that end its round come from every live member at
    /// one propose timeout (a member that started the height only on seeing others' votes
    /// would wait a second one), and whoever leads the next round has the calls to propose.
    fn forward_to_leaders(&mut self, round: u32, call_ids: Vec<CallId>) {
        let k = self.k();
        let leader = self.leader(round).0;
        let to: Vec<MemberIndex> = (0..k)
            .map(|i| MemberIndex((leader + i) % k))
            .filter(|m| *m != self.me())
            .collect();
        if to.is_empty() {
            return;
        }
        for id in &call_ids {
            self.mark_exposed(id);
        }
        for member in to {
            self.emit(Action::Send {
                to: member,
                msg: Message::Forward {
                    call_ids: call_ids.clone(),
                },
            });
        }
    }

    fn arm_tick(&mut self) {
        let needed =
            !self.pending.is_empty() || !self.waiting.is_empty() || self.known > self.height;
        if needed && self.tick_at.is_none() {
            let at_ms = self.now.saturating_add(self.config.tick_ms);
            self.tick_at = Some(at_ms);
            self.emit(Action::SetTimer {
                at_ms,
                timer: TimerId::Tick,
            });
        }
    }

    // ----- clients and the leader's execution -------------------------------------------------

    fn on_submit(&mut self, call_id: CallId) {
        if let Some(&(height, receipt_id)) = self.decided_calls.get(&call_id) {
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Finalized { height, receipt_id },
            });
            return;
        }
        if !self.add_pending(call_id, None) {
            // Refused before anyone heard of it here; but it may be known from an earlier
            // attempt, so no `Failed`.
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Unknown {
                    reason: "too many pending calls at this member".into(),
                },
            });
            return;
        }
        self.waiting.entry(call_id).or_insert(self.now);
        self.maybe_start();
        let round = self.round();
        if self.leader(round) == self.me() {
            self.try_propose();
        } else if !self.is_decided(&call_id) {
            // Sent even when already pending: a client retries because something was lost.
            self.forward_to_leaders(round, vec![call_id]);
        }
    }

    /// As the round's leader with a value to find: the cached execution of this height, else
    /// the oldest call (FIFO; skipping decided ones and those that failed here a moment ago).
    fn try_propose(&mut self) {
        let Some((height, round)) = self.wanted else {
            return;
        };
        if height != self.height
            || !self.started
            || self.round() != round
            || self.executing.is_some()
            || self.applied != self.height
        {
            return;
        }
        if let Some((h, call_id, receipt_id)) = self.ready
            && h == height
            && !self.is_decided(&call_id)
        {
            self.wanted = None;
            self.mark_exposed(&call_id);
            let actions = self.instance.propose(height, round, call_id, receipt_id);
            self.absorb(actions);
            return;
        }
        let censor = {
            #[cfg(test)]
            {
                self.config.planted.censor
            }
            #[cfg(not(test))]
            {
                false
            }
        };
        let pick = self
            .pending
            .iter()
            .find(|p| {
                !(self.failed_recently(&p.call_id)
                    || self.is_decided(&p.call_id)
                    || (censor && p.source.is_some()))
            })
            .map(|p| p.call_id);
        if let Some(call_id) = pick {
            self.executing = Some((height, round, call_id));
            self.first_execution.entry(round).or_insert(call_id);
            self.emit(Action::Execute {
                height,
                round,
                call_id,
            });
        }
    }

    fn on_executed(&mut self, height: Height, round: u32, call_id: CallId, receipt_id: ReceiptId) {
        if height != self.height {
            return;
        }
        if self.executing.is_some_and(|(_, _, c)| c == call_id) {
            self.executing = None;
        }
        if !self.is_decided(&call_id) {
            // Valid for the whole height (the state it ran on does not change until a
            // decision): kept for a later round this member leads too.
            self.ready = Some((height, call_id, receipt_id));
        }
        let _ = round;
        self.try_propose();
    }

    fn on_execute_failed(&mut self, height: Height, round: u32, call_id: CallId, reason: String) {
        let _ = round;
        if self
            .executing
            .is_some_and(|(h, _, c)| h == height && c == call_id)
        {
            self.executing = None;
        }
        self.failed_here.insert(call_id, self.now);
        let exposed = self.proposed_here.contains(&call_id)
            || self
                .pending
                .iter()
                .find(|p| p.call_id == call_id)
                .is_none_or(|p| p.exposed);
        let fail_anyway = {
            #[cfg(test)]
            {
                self.config.planted.fail_exposed_calls
            }
            #[cfg(not(test))]
            {
                false
            }
        };
        if (!exposed || fail_anyway) && self.waiting.remove(&call_id).is_some() {
            // Nobody else knows this call: it can never be decided. Drop it and say so.
            self.pending.retain(|p| p.call_id != call_id);
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Failed { reason },
            });
        } else if !exposed {
            self.pending.retain(|p| p.call_id != call_id);
        } else if let Some(p) = self.pending.iter().find(|p| p.call_id == call_id) {
            // Others may hold it: hand it to every member, so that the next leaders run it
            // (this one runs it again only after a tick, `failed_recently`).
            if p.source.is_none() {
                self.emit(Action::Broadcast {
                    msg: Message::Forward {
                        call_ids: vec![call_id],
                    },
                });
            }
        }
        self.try_propose();
    }

    fn on_already_committed(&mut self, call_id: CallId, height: Height, receipt_id: ReceiptId) {
        if self.executing.is_some_and(|(_, _, c)| c == call_id) {
            self.executing = None;
        }
        self.decided_calls.insert(call_id, (height, receipt_id));
        self.pending.retain(|p| p.call_id != call_id);
        if self.waiting.remove(&call_id).is_some() {
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Finalized { height, receipt_id },
            });
        }
        self.try_propose();
    }

    fn on_behind(&mut self, height: Height) {
        if height != self.height {
            return;
        }
        self.executing = None;
        self.known = self.known.max(Height(height.0 + 1));
        self.request_decisions();
    }

    fn on_committed(&mut self, height: Height) {
        if height.0 + 1 > self.applied.0 {
            self.applied = Height(height.0 + 1);
        }
        if self.applied == self.height {
            let deferred = std::mem::take(&mut self.deferred);
            for (round, value) in deferred {
                self.emit(Action::Validate {
                    height: self.height,
                    round,
                    value,
                });
            }
            self.try_propose();
        }
    }

    // ----- validation -------------------------------------------------------------------------

    fn on_validate_request(&mut self, height: Height, round: u32, value: Value) {
        if height != self.height {
            return;
        }
        self.proposed_here.insert(value.call_id);
        self.mark_exposed(&value.call_id);
        if self.is_decided(&value.call_id) {
            let actions = self.instance.on_value_validated(height, value, false);
            self.absorb(actions);
            return;
        }
        let id = value.id();
        self.validating.insert(id, round);
        self.first_in_round.entry(round).or_insert(id);
        if self.applied == self.height {
            self.emit(Action::Validate {
                height,
                round,
                value,
            });
        } else {
            self.deferred.push((round, value));
        }
    }

    fn on_validated(&mut self, height: Height, value: Value, valid: bool) {
        if height != self.height || !self.started {
            return;
        }
        self.validating.remove(&value.id());
        let actions = self.instance.on_value_validated(height, value, valid);
        self.absorb(actions);
    }

    // ----- decisions --------------------------------------------------------------------------

    fn decide(&mut self, d: Decided) {
        if d.height != self.height {
            return;
        }
        let call_id = d.value.call_id;
        self.emit(Action::Persist(Record::Decision(d.clone())));
        self.emit(Action::Commit(d.clone()));
        self.decided_calls
            .insert(call_id, (d.height, d.value.receipt_id));
        self.pending.retain(|p| p.call_id != call_id);
        if self.waiting.remove(&call_id).is_some() {
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Finalized {
                    height: d.height,
                    receipt_id: d.value.receipt_id,
                },
            });
        }
        self.height = Height(d.height.0 + 1);
        self.first = self.first_of(self.height, &d.value);
        self.known = self.known.max(self.height);
        self.recent.push_back(d);
        while self.recent.len() > RECENT_DECISIONS {
            self.recent.pop_front();
        }
        self.started = false;
        self.armed.clear();
        self.wanted = None;
        self.executing = None;
        self.ready = None;
        self.validating.clear();
        self.first_in_round.clear();
        self.first_execution.clear();
        self.deferred.clear();
        self.proposed_here.clear();
        self.future_decisions = self.future_decisions.split_off(&self.height);
        if let Some(next) = self.future_decisions.remove(&self.height) {
            self.decide(next);
        }
    }

    fn certificate_ok(&self, d: &Decided) -> bool {
        #[cfg(test)]
        if self.config.planted.trust_decisions {
            return true;
        }
        d.certificate.height == d.height.0
            && d.certificate.value_id == d.value.id()
            && verify_commit_certificate(
                &self.verifier,
                &self.committee,
                self.instance.domain(),
                &d.certificate,
            )
            .is_ok()
    }

    fn on_decision(&mut self, from: MemberIndex, d: Decided) {
        if d.height < self.height || !self.certificate_ok(&d) {
            return;
        }
        if d.height > self.height {
            if d.height.0 < self.height.0.saturating_add(SYNC_BATCH) {
                self.future_decisions.insert(d.height, d.clone());
            }
            self.known = self.known.max(Height(d.height.0 + 1));
            let _ = from;
            self.request_decisions();
            return;
        }
        if self.is_decided(&d.value.call_id) {
            // No honest quorum certifies a call twice: refuse rather than apply it twice.
            return;
        }
        if self.started {
            match self.instance.on_decision(d.height, d.value, &d.certificate) {
                Ok(actions) if !actions.is_empty() => return self.absorb(actions),
                Ok(_) => {}
                Err(_) => return,
            }
        }
        self.decide(d);
    }

    /// Asks every member for the decisions from `height` on (at most once per half tick).
    fn request_decisions(&mut self) {
        #[cfg(test)]
        if self.config.planted.request_decisions_once {
            if self.requested_for == Some(self.height) {
                return;
            }
            self.requested_for = Some(self.height);
        }
        if self
            .last_request_ms
            .is_some_and(|at| self.now < at.saturating_add(self.config.tick_ms / 2))
        {
            return;
        }
        self.last_request_ms = Some(self.now);
        self.emit(Action::Broadcast {
            msg: Message::DecisionRequest {
                from_height: self.height,
            },
        });
    }

    /// Sends `to` the decisions from `from_height` on that it lacks, once per tick per height.
    fn serve_decisions(&mut self, to: MemberIndex, from_height: Height) {
        if from_height >= self.height {
            return;
        }
        if let Some(at) = self.served.get(&(to, from_height))
            && self.now < at.saturating_add(self.config.tick_ms / 2)
        {
            return;
        }
        if self.served.len() > 4 * self.k() as usize {
            self.served.clear();
        }
        self.served.insert((to, from_height), self.now);
        let until = Height(self.height.0.min(from_height.0.saturating_add(SYNC_BATCH)));
        let oldest = self.recent.front().map_or(self.height, |d| d.height);
        if from_height < oldest {
            self.emit(Action::SendStoredDecisions {
                to,
                from_height,
                until: until.min(oldest),
            });
        }
        let sends: Vec<Decided> = self
            .recent
            .iter()
            .filter(|d| d.height >= from_height && d.height < until)
            .cloned()
            .collect();
        for d in sends {
            self.emit(Action::Send {
                to,
                msg: Message::Decision(d),
            });
        }
    }

    // ----- messages ---------------------------------------------------------------------------

    fn verified(&self, msg: &ConsensusMessage) -> bool {
        let domain = self.instance.domain();
        match msg {
            ConsensusMessage::Proposal(p) => {
                self.committee.contains(p.message.proposer)
                    && verify_proposal(&self.verifier, domain, p)
            }
            ConsensusMessage::Vote(v) => {
                self.committee.contains(v.message.voter) && verify_vote(&self.verifier, domain, v)
            }
            _ => false,
        }
    }

    fn on_message(&mut self, from: MemberIndex, msg: Message) {
        if !self.committee.contains(from) || from == self.me() {
            return;
        }
        match msg {
            Message::Consensus(m) => self.on_consensus(from, m),
            Message::Forward { call_ids } => {
                for call_id in call_ids.into_iter().take(MAX_FORWARD) {
                    if !self.is_decided(&call_id) {
                        self.add_pending(call_id, Some(from));
                    }
                }
                self.maybe_start();
                self.try_propose();
            }
            Message::DecisionRequest { from_height } => self.serve_decisions(from, from_height),
            Message::Decision(d) => self.on_decision(from, d),
        }
    }

    fn on_consensus(&mut self, from: MemberIndex, m: ConsensusMessage) {
        let h = m.height();
        if h < self.height {
            // The sender is behind: hand it the decision it is missing.
            return self.serve_decisions(from, h);
        }
        if h > self.height {
            if self.verified(&m) {
                self.known = self.known.max(h);
                self.request_decisions();
            }
            // The instance keeps verified messages of the next heights until they start.
            let actions = self.instance.on_message(m);
            return self.absorb(actions);
        }
        if !self.started {
            if !self.verified(&m) {
                return;
            }
            self.start_height();
        }
        let actions = self.instance.on_message(m);
        self.absorb(actions);
    }

    // ----- timers -----------------------------------------------------------------------------

    fn on_timer(&mut self, timer: TimerId) {
        match timer {
            TimerId::Tick => {
                if self.tick_at.is_some_and(|at| self.now >= at) {
                    self.tick_at = None;
                    self.on_tick();
                }
            }
            TimerId::Consensus {
                height,
                round,
                kind,
            } => {
                let key = (height, round, kind);
                let Some(&at) = self.armed.get(&key) else {
                    return;
                };
                if self.now < at || height != self.height || !self.started {
                    return;
                }
                self.armed.remove(&key);
                if kind == TimeoutKind::Propose && self.own_work_pending(round) {
                    // The delay is this member's own (it executes or re-executes the round's
                    // value): another full propose timeout instead of a nil prevote.
                    let at_ms = self.now.saturating_add(
                        self.config
                            .instance
                            .timeouts
                            .duration_ms(round, TimeoutKind::Propose),
                    );
                    self.armed.insert(key, at_ms);
                    self.emit(Action::SetTimer { at_ms, timer });
                    return;
                }
                let actions = self.instance.on_timeout(height, round, kind);
                self.absorb(actions);
            }
        }
    }

    fn own_work_pending(&self, round: u32) -> bool {
        self.executing.is_some_and(|(h, r, c)| {
            h == self.height && r == round && self.first_execution.get(&round) == Some(&c)
        }) || self
            .first_in_round
            .get(&round)
            .is_some_and(|id| self.validating.contains_key(id))
    }

    fn on_tick(&mut self) {
        // A call set aside after a failed execution here may be run again now.
        self.try_propose();
        // Expiry: calls nobody decided within the TTL are dropped; a waiting client learns
        // that this member gave up (the call may still be decided elsewhere).
        let ttl = self.config.pending_ttl_ms;
        let now = self.now;
        self.pending
            .retain(|p| now.saturating_sub(p.since_ms) < ttl);
        let expired: Vec<CallId> = self
            .waiting
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= ttl)
            .map(|(c, _)| *c)
            .collect();
        for call_id in expired {
            self.waiting.remove(&call_id);
            self.pending.retain(|p| p.call_id != call_id);
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Unknown {
                    reason: "not decided in time; it may still be decided: retry with the same id"
                        .into(),
                },
            });
        }
        if self.known > self.height {
            let once = {
                #[cfg(test)]
                {
                    self.config.planted.request_decisions_once
                }
                #[cfg(not(test))]
                {
                    false
                }
            };
            if !once {
                self.request_decisions();
            }
        }
        if !self.pending.is_empty() {
            // A Forward may have been lost: send the queue to the leader again.
            let leader = self.leader(self.round());
            if leader != self.me() {
                let call_ids = self.forwardable();
                if !call_ids.is_empty() {
                    for id in &call_ids {
                        self.mark_exposed(id);
                    }
                    self.emit(Action::Send {
                        to: leader,
                        msg: Message::Forward { call_ids },
                    });
                }
            }
        }
    }

    // ----- restart ----------------------------------------------------------------------------

    fn on_restart(&mut self, wal: Vec<WalEntry>, last: Option<Decided>) {
        if let Some(d) = last {
            self.height = Height(d.height.0 + 1);
            self.first = self.first_of(self.height, &d.value);
            self.decided_calls
                .insert(d.value.call_id, (d.height, d.value.receipt_id));
            self.recent.push_back(d);
        }
        self.applied = self.height;
        self.known = self.height;
        if wal.iter().any(|e| e.height == self.height) {
            // Votes of this height were logged: resume them (never sign anything else).
            self.started = true;
            let actions = self.instance.recover(self.height, self.first, &wal);
            self.absorb(actions);
        }
    }
}
