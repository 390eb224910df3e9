//! PBFT (Castro & Liskov, OSDI 1999) for ONE program and ONE committee member, as a pure state
//! machine in the style of iroh-gossip's `proto`: [`Member::handle`] takes an [`Event`] and the
//! current time and returns the [`Action`]s the driver must perform, in order. No IO, no clock,
//! no randomness inside, so the simulator (`super::sim`) drives exactly the code the node runs.
//!
//! Each height is one single-decree PBFT instance over a [`Proposal`] (call id + receipt id).
//! Heights are decided strictly one after the other because a receipt at height `h` binds the
//! state root produced by height `h - 1`. Within a height:
//!
//! * view `v` is led by member `(first + v) % k`, where `first` led the view that decided the
//!   previous height (0 for height 0): a leader keeps the lead while it is healthy, and a
//!   failover moves it for good instead of costing every later height a view timeout; view 0
//!   needs no NewView;
//! * the leader asks the driver to execute a call ([`Action::Execute`]) and broadcasts a
//!   PrePrepare, which also counts as its own Prepare;
//! * a replica accepts one PrePrepare per view from that view's leader, has the driver re-execute
//!   it ([`Action::Validate`]) and broadcasts Prepare;
//! * `q` matching Prepares (leader's PrePrepare included) make a member *prepared*: it records a
//!   [`PreparedCert`] and broadcasts Commit (in the node, the BLS signature on the receipt id);
//! * `q` matching Commits of one view finalize the value ([`Action::Commit`]); those `q` signers
//!   are the aggregated receipt;
//! * on timeout a member moves to view `v + 1` with a ViewChange carrying its highest prepared
//!   certificate; it also joins a higher view when `f + 1` others ask for one; the new leader,
//!   with `q` ViewChanges, sends NewView and must re-propose the value of the highest-view
//!   certificate among them (the lock rule), which replicas re-check before preparing;
//! * timers run only while the height has work (pending calls, votes, a view change), and a
//!   member waiting for a NewView starts its view timer only once `q` members reached that view
//!   (retransmitting its ViewChange meanwhile), as in PBFT §4.5.2, so early timers cannot keep
//!   a minority one view ahead of everybody else forever.
//!
//! Votes are persisted ([`Action::Persist`]) before the message revealing them, so a restarted
//! member ([`Event::Restart`]) never contradicts itself. Members that fall behind learn finalized
//! heights through [`Message::Decided`] (commit certificates), requested with
//! [`Message::SyncRequest`] or sent unasked to members that speak about an old height.
//!
//! Signatures are the driver's business: the core assumes every `Message` really comes from
//! `from`, and that the ViewChanges embedded in a NewView, the prepare senders of a
//! [`PreparedCert`] and the signers of a [`Decision`] were verified. The core checks only their
//! structure (distinct, in-range senders, enough of them).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::quorum::{self, Tally};

/// Rank of a committee member, `0..k`.
pub type MemberIndex = usize;
/// Position in the program's sequence of calls.
pub type Height = u64;
/// PBFT view number within one height.
pub type View = u64;
/// Client-chosen call id; a retry of the same call carries the same id.
pub type CallId = [u8; 32];
/// Receipt id of an execution (binds call, state root in and out).
pub type Digest = [u8; 32];

/// Consensus messages for heights in `(current, current + FUTURE_HEIGHTS]` are buffered and
/// replayed once the member reaches them (a fast leader's next PrePrepare often overtakes the
/// last Commits of the previous height); anything further ahead only triggers a sync request.
pub const FUTURE_HEIGHTS: u64 = 2;
/// Votes and view changes are accepted for views up to `current view + VIEW_WINDOW`; beyond that
/// they are dropped, which bounds the per-height state a faulty member can make us allocate.
pub const VIEW_WINDOW: u64 = 64;
/// Votes of views older than `current view - KEPT_OLD_VIEWS` are forgotten (late Commits of a
/// recent view can still finalize the height; older ones are replaced by catch-up).
pub const KEPT_OLD_VIEWS: u64 = 4;
/// At most this many future-height messages are buffered per sender.
pub const MAX_BUFFERED_PER_SENDER: usize = 16;
/// Bound on calls waiting to be sequenced at this member; new submissions beyond it are refused.
pub const MAX_PENDING: usize = 4096;
/// Bound on call ids carried by one Forward message (extra ones are ignored).
pub const MAX_FORWARD: usize = 64;
/// Number of finalized heights sent in answer to one sync request.
pub const SYNC_BATCH: u64 = 16;

/// The value agreed on at one height.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Proposal {
    pub call_id: CallId,
    /// Receipt id; only valid on top of the value finalized at the previous height.
    pub digest: Digest,
    /// The leader that first proposed it (in the node, the receipt's executor). Once the
    /// value is decided, it leads the next height's view 0 ([`quorum::leader`]): every member
    /// decides the same proposal, so all agree on it whatever view each decided in. A lying
    /// leader can name anyone; that costs one view timeout at the next height, never safety
    /// (two quorums of Prepares in one view still share an honest member).
    pub proposer: MemberIndex,
}

/// Proof that `q` members prepared `proposal` in `view`: the leader (through its PrePrepare)
/// and the senders of matching Prepares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreparedCert {
    pub view: View,
    pub proposal: Proposal,
    pub prepares: Vec<MemberIndex>,
}

/// A member's request to move `height` to `new_view`, with its highest prepared certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewChange {
    pub height: Height,
    pub new_view: View,
    pub prepared: Option<PreparedCert>,
}

/// A finalized height: the value and the `q` members whose Commits (signatures) certify it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    pub height: Height,
    pub proposal: Proposal,
    pub signers: Vec<MemberIndex>,
}

/// Messages between committee members of one program.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Message {
    PrePrepare {
        height: Height,
        view: View,
        proposal: Proposal,
    },
    Prepare {
        height: Height,
        view: View,
        digest: Digest,
    },
    Commit {
        height: Height,
        view: View,
        digest: Digest,
    },
    ViewChange(ViewChange),
    /// Opens `view` (> 0): `q` ViewChanges for it and the value they force (None: free choice,
    /// the leader will follow with a PrePrepare for a fresh call).
    NewView {
        height: Height,
        view: View,
        view_changes: Vec<(MemberIndex, ViewChange)>,
        proposal: Option<Proposal>,
    },
    /// Calls submitted to the sender that the receiver (a leader) should sequence.
    Forward {
        call_ids: Vec<CallId>,
    },
    /// The leader could not execute the call for a local, non-reproducible reason (wall-clock
    /// timeout, cancellation); no height was consumed and waiting clients get an error.
    Abandon {
        call_id: CallId,
        reason: String,
    },
    /// "Send me the decisions from this height on."
    SyncRequest {
        from_height: Height,
    },
    /// A finalized height with its commit certificate.
    Decided(Decision),
}

impl Message {
    /// Height of a per-height consensus message (None for Forward, Abandon, SyncRequest).
    pub fn height(&self) -> Option<Height> {
        match self {
            Message::PrePrepare { height, .. }
            | Message::Prepare { height, .. }
            | Message::Commit { height, .. }
            | Message::NewView { height, .. } => Some(*height),
            Message::ViewChange(vc) => Some(vc.height),
            Message::Decided(d) => Some(d.height),
            Message::Forward { .. } | Message::Abandon { .. } | Message::SyncRequest { .. } => None,
        }
    }
}

/// What a client finally hears about its call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    Finalized {
        height: Height,
        digest: Digest,
    },
    /// Not sequenced by this attempt (local execution failure, overload); a retry may succeed.
    Failed {
        reason: String,
    },
}

/// Inputs of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client call reached this member (the payload stays with the driver).
    Submit { call_id: CallId },
    /// The driver executed `call_id` on top of height - 1, as asked by [`Action::Execute`].
    Executed {
        height: Height,
        view: View,
        call_id: CallId,
        digest: Digest,
    },
    /// Execution failed for a local reason; no height is consumed.
    ExecuteFailed {
        height: Height,
        view: View,
        call_id: CallId,
        reason: String,
    },
    /// Result of re-executing a proposal, as asked by [`Action::Validate`].
    Validated {
        height: Height,
        view: View,
        digest: Digest,
        ok: bool,
    },
    /// A message from committee member `from` (authenticated by the driver).
    Message { from: MemberIndex, msg: Message },
    /// A timer set with [`Action::SetTimer`] fired.
    Timer { height: Height, view: View },
    /// Rebuild after a crash from persisted data only.
    Restart { persisted: Persisted },
}

/// Outputs of the state machine; the driver must perform them in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        to: MemberIndex,
        msg: Message,
    },
    /// To every other committee member.
    Broadcast {
        msg: Message,
    },
    /// Durably record this change (see [`Persisted::apply`]) before performing later actions.
    Persist(PersistedChange),
    /// Execute `call_id` on top of height - 1 and answer with Executed / ExecuteFailed.
    Execute {
        height: Height,
        view: View,
        call_id: CallId,
    },
    /// Re-execute `proposal` on top of height - 1 and answer with Validated.
    Validate {
        height: Height,
        view: View,
        proposal: Proposal,
    },
    /// The height is final: apply it. It was persisted by the `Persist(Finalized)` just before;
    /// a driver that crashes in between applies its log's unapplied tail on restart.
    Commit(Decision),
    /// Answer the client(s) waiting on this member for `call_id`.
    Reply {
        call_id: CallId,
        result: CallResult,
    },
    /// Deliver `Event::Timer { height, view }` at `at_ms` (timers are never cancelled; stale
    /// ones are ignored).
    SetTimer {
        height: Height,
        view: View,
        at_ms: u64,
    },
}

/// A vote this member sent at the current height.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SentVote {
    PrePrepare {
        view: View,
        proposal: Proposal,
    },
    /// Keeps the whole proposal so a restarted member can still finalize it.
    Prepare {
        view: View,
        proposal: Proposal,
    },
    Commit {
        view: View,
        digest: Digest,
    },
}

/// One durable update.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PersistedChange {
    Finalized(Decision),
    EnteredView {
        height: Height,
        view: View,
    },
    /// A NewView for `view` was sent or accepted; `proposal` is the value it forced, which is
    /// also this view's PrePrepare.
    ViewActivated {
        height: Height,
        view: View,
        proposal: Option<Proposal>,
    },
    Sent {
        height: Height,
        vote: SentVote,
    },
    Prepared {
        height: Height,
        cert: PreparedCert,
    },
}

/// Votes at the height being decided.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeightVotes {
    pub height: Height,
    pub highest_view: View,
    pub activated: Vec<(View, Option<Proposal>)>,
    pub sent: Vec<SentVote>,
    pub prepared: Option<PreparedCert>,
}

impl HeightVotes {
    /// Records entering `view` and forgets votes of views a restarted member will never act in
    /// again (it resumes at `highest_view`; its prepared certificate is kept separately), so
    /// the record stays bounded however many views a long outage goes through.
    fn enter(&mut self, view: View) {
        self.highest_view = self.highest_view.max(view);
        let keep_from = self.highest_view.saturating_sub(KEPT_OLD_VIEWS);
        self.activated.retain(|(v, _)| *v >= keep_from);
        self.sent.retain(|vote| vote.view() >= keep_from);
    }
}

impl SentVote {
    pub fn view(&self) -> View {
        match self {
            SentVote::PrePrepare { view, .. }
            | SentVote::Prepare { view, .. }
            | SentVote::Commit { view, .. } => *view,
        }
    }
}

/// Everything that survives a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Finalized log, `log[h].height == h`.
    pub log: Vec<Decision>,
    /// Votes at height `log.len()`; votes of finalized heights are no longer needed.
    pub votes: Option<HeightVotes>,
}

impl Persisted {
    /// Applies one change; the driver calls this for every [`Action::Persist`].
    pub fn apply(&mut self, change: &PersistedChange) {
        let mut record = VoteRecord {
            next_height: self.log.len() as u64,
            votes: self.votes.take(),
        };
        if let Some(decided) = record.apply(change) {
            self.log.push(decided);
        }
        self.votes = record.votes;
    }
}

/// What a store keeps per program beside the finalized log: how many heights are final and
/// the votes at the next one. [`Persisted::apply`] is defined through it, so a store that
/// keeps the log elsewhere (one row per height) applies changes with the very same rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoteRecord {
    pub next_height: Height,
    pub votes: Option<HeightVotes>,
}

impl VoteRecord {
    /// Applies one change; returns the decision to append to the log, if it finalized the
    /// next height.
    pub fn apply(&mut self, change: &PersistedChange) -> Option<Decision> {
        match change {
            PersistedChange::Finalized(d) => {
                if d.height == self.next_height {
                    self.next_height += 1;
                    self.votes = None;
                    return Some(d.clone());
                }
            }
            PersistedChange::EnteredView { height, view } => {
                if let Some(v) = self.votes_at(*height) {
                    v.enter(*view);
                }
            }
            PersistedChange::ViewActivated {
                height,
                view,
                proposal,
            } => {
                if let Some(v) = self.votes_at(*height) {
                    v.enter(*view);
                    v.activated.push((*view, *proposal));
                }
            }
            PersistedChange::Sent { height, vote } => {
                if let Some(v) = self.votes_at(*height) {
                    v.sent.push(vote.clone());
                }
            }
            PersistedChange::Prepared { height, cert } => {
                if let Some(v) = self.votes_at(*height)
                    && v.prepared.as_ref().is_none_or(|c| c.view < cert.view)
                {
                    v.prepared = Some(cert.clone());
                }
            }
        }
        None
    }

    fn votes_at(&mut self, height: Height) -> Option<&mut HeightVotes> {
        if height != self.next_height {
            return None;
        }
        if self.votes.as_ref().is_none_or(|v| v.height != height) {
            self.votes = Some(HeightVotes {
                height,
                highest_view: 0,
                activated: Vec::new(),
                sent: Vec::new(),
                prepared: None,
            });
        }
        self.votes.as_mut()
    }
}

/// Bugs that can be switched on to prove the simulator catches them.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// The new leader ignores prepared certificates and replicas do not check NewView's choice.
    pub skip_lock_rule: bool,
    /// A restarted member keeps its log but forgets its votes of the current height.
    pub forget_votes_on_restart: bool,
}

/// Static configuration of one member.
#[derive(Clone, Debug)]
pub struct Config {
    /// Committee size, at least 1.
    pub k: usize,
    /// This member's rank, `< k`.
    pub me: MemberIndex,
    /// Timeout of view 0; view `v` waits `quorum::view_timeout(base, v)`.
    pub base_timeout_ms: u64,
    #[cfg(test)]
    pub planted: PlantedBugs,
}

impl Config {
    pub fn new(k: usize, me: MemberIndex, base_timeout_ms: u64) -> Self {
        Config {
            k,
            me,
            base_timeout_ms,
            #[cfg(test)]
            planted: PlantedBugs::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Validation {
    NotAsked,
    Pending,
    Ok,
    Refused,
}

/// Per (height, view) state.
#[derive(Debug)]
struct ViewState {
    /// The one PrePrepare accepted in this view (sent, if we lead it).
    pre_prepare: Option<Proposal>,
    /// A PrePrepare that arrived before the view's NewView; used only if NewView leaves the
    /// choice free.
    early_pre_prepare: Option<Proposal>,
    validation: Validation,
    prepares: Tally<Digest>,
    commits: Tally<Digest>,
    sent_prepare: Option<Digest>,
    sent_commit: Option<Digest>,
}

impl ViewState {
    fn new(k: usize) -> Self {
        ViewState {
            pre_prepare: None,
            early_pre_prepare: None,
            validation: Validation::NotAsked,
            prepares: Tally::new(k),
            commits: Tally::new(k),
            sent_prepare: None,
            sent_commit: None,
        }
    }
}

/// State of the height being decided; replaced wholesale when it is finalized.
#[derive(Debug)]
struct Round {
    height: Height,
    /// Leader of this height's view 0: the leader that decided the previous height.
    first_leader: MemberIndex,
    view: View,
    /// View 0, or a NewView for `view` was sent/accepted. An inactive member waits for NewView
    /// and accepts no PrePrepare.
    active: bool,
    views: BTreeMap<View, ViewState>,
    view_changes: BTreeMap<View, BTreeMap<MemberIndex, ViewChange>>,
    /// Per sender, the highest view it asked for (for the f + 1 join rule).
    highest_vc_view: Vec<Option<View>>,
    prepared: Option<PreparedCert>,
    /// Proposals known valid at this height (validated, executed by us, or certified).
    valid: HashMap<Digest, Proposal>,
    /// Call the driver is executing for our PrePrepare of `view`.
    executing: Option<CallId>,
    timer_deadline: Option<u64>,
    timer_kind: TimerKind,
    forwarded_in_view: Option<View>,
}

/// What the armed timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    /// The view must make progress before it expires, else we move to the next view.
    Progress,
    /// We wait for a NewView but fewer than q members have reached this view yet: PBFT starts
    /// the view timer only once q ViewChanges are in, so that members who timed out early do
    /// not race through views alone and stay one view ahead of everybody forever. Meanwhile
    /// our ViewChange is retransmitted every base timeout, in case it was lost.
    Retransmit,
}

impl Round {
    fn new(height: Height, k: usize, first_leader: MemberIndex) -> Self {
        Round {
            height,
            first_leader,
            view: 0,
            active: true,
            views: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            highest_vc_view: vec![None; k],
            prepared: None,
            valid: HashMap::new(),
            executing: None,
            timer_deadline: None,
            timer_kind: TimerKind::Progress,
            forwarded_in_view: None,
        }
    }

    fn view_state(&mut self, view: View, k: usize) -> &mut ViewState {
        self.views.entry(view).or_insert_with(|| ViewState::new(k))
    }

    /// Drops state of views that can no longer matter after entering `view`.
    fn prune(&mut self, view: View) {
        let keep_from = view.saturating_sub(KEPT_OLD_VIEWS);
        self.views.retain(|v, _| *v >= keep_from);
        self.view_changes.retain(|v, _| *v >= view);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PeerThrottle {
    last_sync_request_ms: Option<u64>,
    last_catch_up: Option<(Height, u64)>,
}

/// One committee member of one program. See the module documentation.
#[derive(Debug)]
pub struct Member {
    config: Config,
    f: usize,
    q: usize,
    log: Vec<Decision>,
    decided_calls: HashMap<CallId, Height>,
    round: Round,
    /// Calls heard of and not yet finalized, in arrival order (what a leader proposes next).
    pending: VecDeque<CallId>,
    /// Calls whose client waits on this member for the reply.
    waiting_clients: HashSet<CallId>,
    future_msgs: Vec<(MemberIndex, Message)>,
    future_decided: BTreeMap<Height, (MemberIndex, Decision)>,
    /// Buffered messages to process once the current event is done (iterative, not recursive).
    replay: VecDeque<(MemberIndex, Message)>,
    peers: Vec<PeerThrottle>,
    now: u64,
    out: Vec<Action>,
}

impl Member {
    /// # Panics
    /// If `config.k == 0` or `config.me >= config.k` (a local configuration error).
    pub fn new(config: Config) -> Self {
        assert!(
            config.k >= 1 && config.me < config.k,
            "invalid committee config: k={} me={}",
            config.k,
            config.me
        );
        let k = config.k;
        Member {
            f: quorum::faults(k),
            q: quorum::quorum(k),
            log: Vec::new(),
            decided_calls: HashMap::new(),
            round: Round::new(0, k, 0),
            pending: VecDeque::new(),
            waiting_clients: HashSet::new(),
            future_msgs: Vec::new(),
            future_decided: BTreeMap::new(),
            replay: VecDeque::new(),
            peers: vec![PeerThrottle::default(); k],
            now: 0,
            out: Vec::new(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Next height to decide (= number of finalized heights).
    pub fn height(&self) -> Height {
        self.round.height
    }

    /// Current view at the current height.
    pub fn view(&self) -> View {
        self.round.view
    }

    pub fn log(&self) -> &[Decision] {
        &self.log
    }

    /// True if this member leads the current view.
    pub fn is_leader(&self) -> bool {
        self.leader(self.round.view) == self.config.me
    }

    /// Number of calls waiting to be sequenced.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// Processes one event; the returned actions must be performed in order.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> Vec<Action> {
        self.now = now_ms;
        match event {
            Event::Submit { call_id } => self.on_submit(call_id),
            Event::Executed {
                height,
                view,
                call_id,
                digest,
            } => self.on_executed(height, view, call_id, digest),
            Event::ExecuteFailed {
                height,
                view,
                call_id,
                reason,
            } => self.on_execute_failed(height, view, call_id, reason),
            Event::Validated {
                height,
                view,
                digest,
                ok,
            } => self.on_validated(height, view, digest, ok),
            Event::Message { from, msg } => self.on_message(from, msg),
            Event::Timer { height, view } => self.on_timer(height, view),
            Event::Restart { persisted } => self.on_restart(persisted),
        }
        while let Some((from, msg)) = self.replay.pop_front() {
            self.on_message(from, msg);
        }
        self.arm_timer_if_needed();
        std::mem::take(&mut self.out)
    }

    // ----- helpers -------------------------------------------------------------------------

    fn emit(&mut self, action: Action) {
        self.out.push(action);
    }

    fn leader(&self, view: View) -> MemberIndex {
        quorum::leader(self.config.k, self.round.first_leader, view)
    }

    fn me(&self) -> MemberIndex {
        self.config.me
    }

    fn view_state(&mut self, view: View) -> &mut ViewState {
        self.round.view_state(view, self.config.k)
    }

    /// Views whose votes we keep: a few old ones (late Commits) up to the look-ahead window.
    fn view_in_window(&self, view: View) -> bool {
        view.saturating_add(KEPT_OLD_VIEWS) >= self.round.view
            && view <= self.round.view.saturating_add(VIEW_WINDOW)
    }

    /// At least `q` distinct in-range members.
    fn is_quorum_of_members(&self, members: &[MemberIndex]) -> bool {
        let mut seen = vec![false; self.config.k];
        let mut distinct = 0;
        for &m in members {
            if let Some(slot) = seen.get_mut(m)
                && !*slot
            {
                *slot = true;
                distinct += 1;
            }
        }
        distinct >= self.q
    }

    /// A certificate can only justify views after its own, and must include its view's leader.
    fn cert_is_well_formed(&self, cert: &PreparedCert, new_view: View) -> bool {
        cert.view < new_view
            && cert.prepares.contains(&self.leader(cert.view))
            && self.is_quorum_of_members(&cert.prepares)
    }

    /// Whether this height needs progress, i.e. whether a silent leader should be replaced.
    /// An idle member arms no timer, so an idle program does not churn through views.
    fn has_work(&self) -> bool {
        !self.pending.is_empty()
            || !self.round.active
            || self.round.prepared.is_some()
            || self.round.executing.is_some()
            || self.round.views.get(&self.round.view).is_some_and(|vs| {
                vs.pre_prepare.is_some() || !vs.prepares.is_empty() || !vs.commits.is_empty()
            })
    }

    /// Members known to have reached the current view (their latest ViewChange is for it or a
    /// later one), ourselves included.
    fn view_support(&self) -> usize {
        let view = self.round.view;
        let others = self
            .round
            .highest_vc_view
            .iter()
            .enumerate()
            .filter(|(i, v)| *i != self.me() && v.is_some_and(|v| v >= view))
            .count();
        others + 1
    }

    fn arm_timer_if_needed(&mut self) {
        let wanted = if !self.round.active && self.view_support() < self.q {
            TimerKind::Retransmit
        } else {
            TimerKind::Progress
        };
        if self.round.timer_deadline.is_some()
            && self.round.timer_kind == TimerKind::Retransmit
            && wanted == TimerKind::Progress
        {
            // A quorum has reached the view: from now on it gets a full view timeout.
            self.round.timer_deadline = None;
        }
        if self.round.timer_deadline.is_none() && self.has_work() {
            let base = self.config.base_timeout_ms;
            let timeout = match wanted {
                TimerKind::Retransmit => base,
                TimerKind::Progress => quorum::view_timeout(base, self.round.view),
            };
            let at_ms = self.now.saturating_add(timeout);
            self.round.timer_deadline = Some(at_ms);
            self.round.timer_kind = wanted;
            self.emit(Action::SetTimer {
                height: self.round.height,
                view: self.round.view,
                at_ms,
            });
        }
    }

    fn add_pending(&mut self, call_id: CallId) -> bool {
        if self.pending.contains(&call_id) {
            return true;
        }
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        self.pending.push_back(call_id);
        true
    }

    /// Hands our pending calls to the leader of the current view, once per view, so calls
    /// survive the change of leader.
    fn forward_pending_to_leader(&mut self) {
        let view = self.round.view;
        let leader = self.leader(view);
        if leader == self.me()
            || self.pending.is_empty()
            || self.round.forwarded_in_view == Some(view)
        {
            return;
        }
        self.round.forwarded_in_view = Some(view);
        let call_ids = self.pending.iter().take(MAX_FORWARD).copied().collect();
        self.emit(Action::Send {
            to: leader,
            msg: Message::Forward { call_ids },
        });
    }

    // ----- clients and execution -----------------------------------------------------------

    fn on_submit(&mut self, call_id: CallId) {
        if let Some(&height) = self.decided_calls.get(&call_id) {
            // A retry of a call that is already final: same answer as the first time.
            if let Some(d) = self.log.get(height as usize) {
                let digest = d.proposal.digest;
                self.emit(Action::Reply {
                    call_id,
                    result: CallResult::Finalized { height, digest },
                });
            }
            return;
        }
        if !self.add_pending(call_id) {
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Failed {
                    reason: "too many pending calls".into(),
                },
            });
            return;
        }
        self.waiting_clients.insert(call_id);
        let leader = self.leader(self.round.view);
        if leader == self.me() {
            self.try_propose();
        } else {
            // Forwarded even if already pending: the client retries because something was lost.
            self.emit(Action::Send {
                to: leader,
                msg: Message::Forward {
                    call_ids: vec![call_id],
                },
            });
        }
    }

    fn on_forward(&mut self, call_ids: Vec<CallId>) {
        for call_id in call_ids.into_iter().take(MAX_FORWARD) {
            if !self.decided_calls.contains_key(&call_id) {
                self.add_pending(call_id);
            }
        }
        self.try_propose();
    }

    fn on_abandon(&mut self, from: MemberIndex, call_id: CallId, reason: String) {
        if from != self.leader(self.round.view) {
            return;
        }
        self.pending.retain(|c| *c != call_id);
        if self.waiting_clients.remove(&call_id) {
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Failed { reason },
            });
        }
    }

    /// As leader of an active view without a PrePrepare, start executing the oldest pending call.
    fn try_propose(&mut self) {
        let view = self.round.view;
        if !self.round.active || self.leader(view) != self.me() || self.round.executing.is_some() {
            return;
        }
        if self
            .round
            .views
            .get(&view)
            .is_some_and(|vs| vs.pre_prepare.is_some())
        {
            return;
        }
        // Exactly once: never propose a call already finalized at a lower height.
        let Some(call_id) = self
            .pending
            .iter()
            .copied()
            .find(|c| !self.decided_calls.contains_key(c))
        else {
            return;
        };
        self.round.executing = Some(call_id);
        self.emit(Action::Execute {
            height: self.round.height,
            view,
            call_id,
        });
    }

    fn on_executed(&mut self, height: Height, view: View, call_id: CallId, digest: Digest) {
        if height != self.round.height
            || view != self.round.view
            || self.round.executing != Some(call_id)
        {
            return;
        }
        self.round.executing = None;
        if !self.round.active || self.leader(view) != self.me() {
            return;
        }
        if self.decided_calls.contains_key(&call_id) {
            self.try_propose();
            return;
        }
        let me = self.me();
        let proposal = Proposal {
            call_id,
            digest,
            proposer: self.me(),
        };
        let vs = self.view_state(view);
        if vs.pre_prepare.is_some() {
            return;
        }
        vs.pre_prepare = Some(proposal);
        vs.validation = Validation::Ok;
        vs.prepares.add(me, digest);
        self.round.valid.insert(digest, proposal);
        self.emit(Action::Persist(PersistedChange::Sent {
            height,
            vote: SentVote::PrePrepare { view, proposal },
        }));
        self.emit(Action::Broadcast {
            msg: Message::PrePrepare {
                height,
                view,
                proposal,
            },
        });
        self.check_prepared();
    }

    fn on_execute_failed(&mut self, height: Height, view: View, call_id: CallId, reason: String) {
        if height != self.round.height
            || view != self.round.view
            || self.round.executing != Some(call_id)
        {
            return;
        }
        self.round.executing = None;
        self.pending.retain(|c| *c != call_id);
        self.emit(Action::Broadcast {
            msg: Message::Abandon {
                call_id,
                reason: reason.clone(),
            },
        });
        if self.waiting_clients.remove(&call_id) {
            self.emit(Action::Reply {
                call_id,
                result: CallResult::Failed { reason },
            });
        }
        self.try_propose();
    }

    // ----- messages ------------------------------------------------------------------------

    fn on_message(&mut self, from: MemberIndex, msg: Message) {
        if from >= self.config.k || from == self.me() {
            return;
        }
        let height = match msg {
            Message::Forward { call_ids } => return self.on_forward(call_ids),
            Message::Abandon { call_id, reason } => return self.on_abandon(from, call_id, reason),
            Message::SyncRequest { from_height } => return self.send_catch_up(from, from_height),
            Message::Decided(d) => return self.on_decided(from, d),
            ref other => match other.height() {
                Some(h) => h,
                None => return,
            },
        };
        if height < self.round.height {
            // The sender is behind: hand it the decisions it is missing.
            return self.send_catch_up(from, height);
        }
        if height > self.round.height {
            if height <= self.round.height.saturating_add(FUTURE_HEIGHTS) {
                self.buffer_future(from, msg);
            } else {
                self.request_sync(from);
            }
            return;
        }
        match msg {
            Message::PrePrepare { view, proposal, .. } => self.on_pre_prepare(from, view, proposal),
            Message::Prepare { view, digest, .. } => self.on_prepare(from, view, digest),
            Message::Commit { view, digest, .. } => self.on_commit(from, view, digest),
            Message::ViewChange(vc) => self.on_view_change(from, vc),
            Message::NewView {
                view,
                view_changes,
                proposal,
                ..
            } => self.on_new_view(from, view, view_changes, proposal),
            Message::Forward { .. }
            | Message::Abandon { .. }
            | Message::SyncRequest { .. }
            | Message::Decided(_) => {}
        }
    }

    fn buffer_future(&mut self, from: MemberIndex, msg: Message) {
        let from_sender = self.future_msgs.iter().filter(|(s, _)| *s == from).count();
        if from_sender < MAX_BUFFERED_PER_SENDER
            && !self
                .future_msgs
                .iter()
                .any(|(s, m)| *s == from && *m == msg)
        {
            self.future_msgs.push((from, msg));
        }
    }

    fn on_pre_prepare(&mut self, from: MemberIndex, view: View, proposal: Proposal) {
        if from != self.leader(view)
            || view < self.round.view
            || view > self.round.view.saturating_add(VIEW_WINDOW)
        {
            return;
        }
        if view > self.round.view || !self.round.active {
            let vs = self.view_state(view);
            vs.early_pre_prepare.get_or_insert(proposal);
            return;
        }
        self.accept_pre_prepare(view, proposal);
    }

    /// Accepts the view's single PrePrepare (the caller checked sender and view) and gets it
    /// validated; a second, different PrePrepare in the same view is ignored. A new leader's
    /// NewView carrying a locked value is its PrePrepare, so it comes here too: the others
    /// count it as the leader's prepare, but the leader's Commit is its signature on the
    /// receipt, and a signer vouches for a result it computed, so it validates like everyone
    /// (unless it already did) and, if its run disagrees, the others finalize without it.
    fn accept_pre_prepare(&mut self, view: View, proposal: Proposal) {
        let height = self.round.height;
        let leader = self.leader(view);
        let already_decided = self.decided_calls.contains_key(&proposal.call_id);
        let known_valid = self.round.valid.get(&proposal.digest) == Some(&proposal);
        let vs = self.view_state(view);
        if vs.pre_prepare.is_some() {
            return;
        }
        vs.pre_prepare = Some(proposal);
        vs.prepares.add(leader, proposal.digest);
        if already_decided {
            // Exactly once: a call final at a lower height can never be proposed again.
            vs.validation = Validation::Refused;
            return;
        }
        if known_valid {
            vs.validation = Validation::Ok;
            self.send_prepare(view);
            return;
        }
        vs.validation = Validation::Pending;
        self.emit(Action::Validate {
            height,
            view,
            proposal,
        });
    }

    fn on_validated(&mut self, height: Height, view: View, digest: Digest, ok: bool) {
        if height != self.round.height {
            return;
        }
        let Some(vs) = self.round.views.get_mut(&view) else {
            return;
        };
        let Some(proposal) = vs.pre_prepare else {
            return;
        };
        if proposal.digest != digest || vs.validation != Validation::Pending {
            return;
        }
        if !ok {
            vs.validation = Validation::Refused;
            return;
        }
        vs.validation = Validation::Ok;
        self.round.valid.insert(digest, proposal);
        if view == self.round.view && self.round.active {
            self.send_prepare(view);
        }
    }

    fn send_prepare(&mut self, view: View) {
        let height = self.round.height;
        let me = self.me();
        if self.leader(view) != me {
            let vs = self.view_state(view);
            let Some(proposal) = vs.pre_prepare else {
                return;
            };
            if vs.validation != Validation::Ok || vs.sent_prepare.is_some() {
                return;
            }
            vs.sent_prepare = Some(proposal.digest);
            vs.prepares.add(me, proposal.digest);
            self.emit(Action::Persist(PersistedChange::Sent {
                height,
                vote: SentVote::Prepare { view, proposal },
            }));
            self.emit(Action::Broadcast {
                msg: Message::Prepare {
                    height,
                    view,
                    digest: proposal.digest,
                },
            });
        }
        self.check_prepared();
    }

    fn on_prepare(&mut self, from: MemberIndex, view: View, digest: Digest) {
        // The leader's vote is its PrePrepare; a Prepare from it is meaningless.
        if from == self.leader(view) || !self.view_in_window(view) {
            return;
        }
        self.view_state(view).prepares.add(from, digest);
        if view == self.round.view {
            self.check_prepared();
        }
    }

    /// Prepared = validated PrePrepare + q matching Prepares (PrePrepare included) in the
    /// current view. Then persist the certificate and our Commit, and broadcast it.
    fn check_prepared(&mut self) {
        let view = self.round.view;
        let height = self.round.height;
        let me = self.me();
        let q = self.q;
        if !self.round.active {
            return;
        }
        let Some(vs) = self.round.views.get_mut(&view) else {
            return;
        };
        let Some(proposal) = vs.pre_prepare else {
            return;
        };
        if vs.validation != Validation::Ok
            || vs.sent_commit.is_some()
            || vs.prepares.count(&proposal.digest) < q
        {
            return;
        }
        let cert = PreparedCert {
            view,
            proposal,
            prepares: vs.prepares.senders(&proposal.digest),
        };
        vs.sent_commit = Some(proposal.digest);
        vs.commits.add(me, proposal.digest);
        self.round.prepared = Some(cert.clone());
        self.emit(Action::Persist(PersistedChange::Prepared { height, cert }));
        self.emit(Action::Persist(PersistedChange::Sent {
            height,
            vote: SentVote::Commit {
                view,
                digest: proposal.digest,
            },
        }));
        self.emit(Action::Broadcast {
            msg: Message::Commit {
                height,
                view,
                digest: proposal.digest,
            },
        });
        self.check_committed(view);
    }

    fn on_commit(&mut self, from: MemberIndex, view: View, digest: Digest) {
        if !self.view_in_window(view) {
            return;
        }
        self.view_state(view).commits.add(from, digest);
        self.check_committed(view);
    }

    /// q matching Commits in one view finalize the height, whatever our own view: at least
    /// f + 1 honest signers were prepared, so no other value can be prepared in a later view.
    fn check_committed(&mut self, view: View) {
        let Some(vs) = self.round.views.get(&view) else {
            return;
        };
        let Some(digest) = vs.commits.reached(self.q) else {
            return;
        };
        let signers = vs.commits.senders(&digest);
        let known = self.round.valid.get(&digest).copied().or_else(|| {
            self.round
                .prepared
                .as_ref()
                .filter(|c| c.proposal.digest == digest)
                .map(|c| c.proposal)
        });
        match known {
            Some(proposal) if !self.decided_calls.contains_key(&proposal.call_id) => {
                self.finalize(proposal, signers);
            }
            Some(_) => {}
            None => {
                // Final, but we never saw (or could not validate) the value: ask its signers.
                for s in signers {
                    if s != self.me() {
                        self.request_sync(s);
                    }
                }
            }
        }
    }

    fn finalize(&mut self, proposal: Proposal, signers: Vec<MemberIndex>) {
        let height = self.round.height;
        let decision = Decision {
            height,
            proposal,
            signers,
        };
        self.emit(Action::Persist(PersistedChange::Finalized(
            decision.clone(),
        )));
        self.emit(Action::Commit(decision.clone()));
        self.log.push(decision);
        self.decided_calls.insert(proposal.call_id, height);
        self.pending.retain(|c| *c != proposal.call_id);
        if self.waiting_clients.remove(&proposal.call_id) {
            self.emit(Action::Reply {
                call_id: proposal.call_id,
                result: CallResult::Finalized {
                    height,
                    digest: proposal.digest,
                },
            });
        }
        let next = height + 1;
        self.round = Round::new(next, self.config.k, proposal.proposer);
        // Replay what arrived early for the new height; keep what is still ahead.
        let buffered = std::mem::take(&mut self.future_msgs);
        for (from, msg) in buffered {
            match msg.height() {
                Some(h) if h == next => self.replay.push_back((from, msg)),
                Some(h) if h > next => self.future_msgs.push((from, msg)),
                _ => {}
            }
        }
        self.future_decided.retain(|h, _| *h >= next);
        if let Some((from, d)) = self.future_decided.remove(&next) {
            self.replay.push_front((from, Message::Decided(d)));
        }
        self.try_propose();
    }

    // ----- catch-up ------------------------------------------------------------------------

    /// Sends `to` our decisions from `from_height` on (at most SYNC_BATCH), at most once per
    /// base timeout for the same height so a chatty laggard cannot make us flood it.
    fn send_catch_up(&mut self, to: MemberIndex, from_height: Height) {
        let len = self.log.len() as u64;
        if from_height >= len {
            return;
        }
        let now = self.now;
        let base = self.config.base_timeout_ms;
        let Some(peer) = self.peers.get_mut(to) else {
            return;
        };
        if let Some((h, at)) = peer.last_catch_up
            && h == from_height
            && now < at.saturating_add(base)
        {
            return;
        }
        peer.last_catch_up = Some((from_height, now));
        let end = len.min(from_height.saturating_add(SYNC_BATCH));
        for h in from_height..end {
            if let Some(d) = self.log.get(h as usize) {
                let msg = Message::Decided(d.clone());
                self.emit(Action::Send { to, msg });
            }
        }
    }

    /// Asks `peer` for decisions from our current height, at most once per base timeout.
    fn request_sync(&mut self, peer: MemberIndex) {
        let now = self.now;
        let base = self.config.base_timeout_ms;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.last_sync_request_ms
            .is_some_and(|at| now < at.saturating_add(base))
        {
            return;
        }
        p.last_sync_request_ms = Some(now);
        let from_height = self.round.height;
        self.emit(Action::Send {
            to: peer,
            msg: Message::SyncRequest { from_height },
        });
    }

    fn on_decided(&mut self, from: MemberIndex, mut d: Decision) {
        if d.height < self.round.height {
            return;
        }
        d.signers.sort_unstable();
        d.signers.dedup();
        d.signers.retain(|s| *s < self.config.k);
        if d.signers.len() < self.q {
            return;
        }
        if d.height > self.round.height {
            if d.height < self.round.height.saturating_add(SYNC_BATCH)
                && self.future_decided.len() < SYNC_BATCH as usize
            {
                self.future_decided.insert(d.height, (from, d));
            }
            // We are missing the heights in between.
            self.request_sync(from);
            return;
        }
        if self.decided_calls.contains_key(&d.proposal.call_id) {
            // No honest quorum certifies a call twice; refuse rather than apply it twice.
            return;
        }
        self.finalize(d.proposal, d.signers);
    }

    // ----- view changes --------------------------------------------------------------------

    fn on_timer(&mut self, height: Height, view: View) {
        if height != self.round.height || view != self.round.view {
            return;
        }
        let Some(deadline) = self.round.timer_deadline else {
            return;
        };
        if self.now < deadline {
            return; // an older timer of the same view
        }
        self.round.timer_deadline = None;
        // Still executing the call as leader, or re-executing the leader's proposal (a slow
        // first compile, a long call): the delay is ours, so the view gets another full
        // timeout instead of a view change; both always end (fuel and time bounded). Other
        // members still time out on a leader that is slow or silent.
        if self.round.timer_kind == TimerKind::Progress
            && (self.round.executing.is_some()
                || self
                    .round
                    .views
                    .get(&self.round.view)
                    .is_some_and(|vs| vs.validation == Validation::Pending))
        {
            self.arm_timer_if_needed();
            return;
        }
        // A call still pending when a timer fires may never have reached the leader (a lost
        // Forward): relay it to every member (PBFT §4.4), so a live leader still sequences it
        // and the others start their own timers, making a view change possible.
        if !self.pending.is_empty() {
            let call_ids = self.pending.iter().take(MAX_FORWARD).copied().collect();
            self.emit(Action::Broadcast {
                msg: Message::Forward { call_ids },
            });
        }
        if self.round.timer_kind == TimerKind::Retransmit {
            if !self.round.active
                && let Some(vc) = self
                    .round
                    .view_changes
                    .get(&view)
                    .and_then(|vcs| vcs.get(&self.me()))
            {
                let msg = Message::ViewChange(vc.clone());
                self.emit(Action::Broadcast { msg });
            }
            return;
        }
        if self.has_work() {
            self.start_view_change(view.saturating_add(1));
        }
    }

    /// Leaves the current view for `new_view`: persist, then announce with our highest
    /// prepared certificate.
    fn start_view_change(&mut self, new_view: View) {
        if new_view <= self.round.view {
            return;
        }
        let height = self.round.height;
        let me = self.me();
        self.round.view = new_view;
        self.round.active = false;
        self.round.executing = None;
        self.round.timer_deadline = None;
        self.round.prune(new_view);
        let vc = ViewChange {
            height,
            new_view,
            prepared: self.round.prepared.clone(),
        };
        self.round
            .view_changes
            .entry(new_view)
            .or_default()
            .insert(me, vc.clone());
        self.emit(Action::Persist(PersistedChange::EnteredView {
            height,
            view: new_view,
        }));
        self.emit(Action::Broadcast {
            msg: Message::ViewChange(vc),
        });
        self.forward_pending_to_leader();
        self.try_new_view();
    }

    fn on_view_change(&mut self, from: MemberIndex, vc: ViewChange) {
        let w = vc.new_view;
        let current = self.round.view;
        if w < current
            || (w == current && self.round.active)
            || w > current.saturating_add(VIEW_WINDOW)
        {
            return;
        }
        if let Some(cert) = &vc.prepared
            && !self.cert_is_well_formed(cert, w)
        {
            return;
        }
        if let Some(slot) = self.round.highest_vc_view.get_mut(from) {
            *slot = Some(slot.map_or(w, |old| old.max(w)));
        }
        self.round
            .view_changes
            .entry(w)
            .or_default()
            .insert(from, vc);
        // Join rule: f + 1 members want a higher view, so at least one honest member timed out.
        let me = self.me();
        let ahead: Vec<View> = self
            .round
            .highest_vc_view
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .filter_map(|(_, v)| *v)
            .filter(|v| *v > current)
            .collect();
        if ahead.len() > self.f
            && let Some(&target) = ahead.iter().min()
        {
            self.start_view_change(target);
        }
        self.try_new_view();
    }

    /// As leader of the view we wait in, with q ViewChanges (ours included): send NewView,
    /// forcing the value of the highest-view prepared certificate among them.
    fn try_new_view(&mut self) {
        let view = self.round.view;
        let height = self.round.height;
        let me = self.me();
        if self.round.active || self.leader(view) != me {
            return;
        }
        let Some(vcs) = self.round.view_changes.get(&view) else {
            return;
        };
        if vcs.len() < self.q {
            return;
        }
        let Some(own) = vcs.get(&me) else {
            return;
        };
        let mut chosen = vec![(me, own.clone())];
        for (sender, vc) in vcs {
            if chosen.len() >= self.q {
                break;
            }
            if *sender != me {
                chosen.push((*sender, vc.clone()));
            }
        }
        let proposal = if self.skip_lock_rule() {
            None
        } else {
            match locked_proposal(&chosen) {
                Ok(p) => p,
                // Two different certificates of one view cannot both be genuine.
                Err(ConflictingCertificates) => return,
            }
        };
        self.emit(Action::Persist(PersistedChange::ViewActivated {
            height,
            view,
            proposal,
        }));
        self.emit(Action::Broadcast {
            msg: Message::NewView {
                height,
                view,
                view_changes: chosen,
                proposal,
            },
        });
        self.activate_view(view, proposal);
    }

    fn on_new_view(
        &mut self,
        from: MemberIndex,
        view: View,
        view_changes: Vec<(MemberIndex, ViewChange)>,
        proposal: Option<Proposal>,
    ) {
        let height = self.round.height;
        let current = self.round.view;
        if view == 0
            || from != self.leader(view)
            || view < current
            || (view == current && self.round.active)
            || view > current.saturating_add(VIEW_WINDOW)
            || view_changes.len() > self.config.k
        {
            return;
        }
        let mut senders = Vec::with_capacity(view_changes.len());
        for (sender, vc) in &view_changes {
            if senders.contains(sender)
                || vc.height != height
                || vc.new_view != view
                || vc
                    .prepared
                    .as_ref()
                    .is_some_and(|c| !self.cert_is_well_formed(c, view))
            {
                return;
            }
            senders.push(*sender);
        }
        if !self.is_quorum_of_members(&senders) {
            return;
        }
        if !self.skip_lock_rule() {
            // The lock rule, checked: the leader may not drop a value that may be final.
            match locked_proposal(&view_changes) {
                Ok(expected) if expected == proposal => {}
                _ => return,
            }
        }
        if view > current {
            self.round.view = view;
            self.round.executing = None;
            self.round.prune(view);
        }
        self.emit(Action::Persist(PersistedChange::ViewActivated {
            height,
            view,
            proposal,
        }));
        self.activate_view(view, proposal);
    }

    fn activate_view(&mut self, view: View, proposal: Option<Proposal>) {
        let me = self.me();
        let leader = self.leader(view);
        self.round.active = true;
        // The view gets a full timeout from the moment it actually starts.
        self.round.timer_deadline = None;
        self.forward_pending_to_leader();
        match proposal {
            Some(p) => self.accept_pre_prepare(view, p),
            None if leader == me => self.try_propose(),
            None => {
                if let Some(p) = self.view_state(view).early_pre_prepare.take() {
                    self.accept_pre_prepare(view, p);
                }
            }
        }
    }

    #[cfg(test)]
    fn skip_lock_rule(&self) -> bool {
        self.config.planted.skip_lock_rule
    }

    #[cfg(not(test))]
    fn skip_lock_rule(&self) -> bool {
        false
    }

    // ----- restart -------------------------------------------------------------------------

    fn on_restart(&mut self, persisted: Persisted) {
        let now = self.now;
        *self = Member::new(self.config.clone());
        self.now = now;
        for d in persisted.log {
            if d.height != self.log.len() as u64 {
                break;
            }
            self.decided_calls.insert(d.proposal.call_id, d.height);
            self.log.push(d);
        }
        let height = self.log.len() as u64;
        let first_leader = self.log.last().map_or(0, |d| d.proposal.proposer);
        self.round = Round::new(height, self.config.k, first_leader);
        #[cfg(test)]
        let restore = !self.config.planted.forget_votes_on_restart;
        #[cfg(not(test))]
        let restore = true;
        if let Some(votes) = persisted.votes.filter(|v| v.height == height && restore) {
            self.restore_votes(votes);
        }
        // Learn what was finalized while we were down.
        self.emit(Action::Broadcast {
            msg: Message::SyncRequest {
                from_height: height,
            },
        });
    }

    /// Rebuilds the current height's vote state so we never contradict a vote sent before the
    /// crash and still report our prepared certificate. Tallies of others' votes are lost; the
    /// view timer recovers from that.
    fn restore_votes(&mut self, votes: HeightVotes) {
        let height = self.round.height;
        let me = self.me();
        let view = votes.highest_view;
        self.round.view = view;
        self.round.active = view == 0 || votes.activated.iter().any(|(v, _)| *v == view);
        for (v, proposal) in &votes.activated {
            if let Some(p) = proposal {
                let leader = self.leader(*v);
                let vs = self.view_state(*v);
                vs.pre_prepare.get_or_insert(*p);
                vs.prepares.add(leader, p.digest);
                // Not valid for us merely because we led: we sign only what we validated
                // (see accept_pre_prepare); the current view's proposal is validated below.
            }
        }
        for vote in &votes.sent {
            match *vote {
                SentVote::PrePrepare { view: v, proposal } => {
                    let vs = self.view_state(v);
                    vs.pre_prepare = Some(proposal);
                    vs.validation = Validation::Ok;
                    vs.prepares.add(me, proposal.digest);
                    self.round.valid.insert(proposal.digest, proposal);
                }
                SentVote::Prepare { view: v, proposal } => {
                    let leader = self.leader(v);
                    let vs = self.view_state(v);
                    vs.pre_prepare = Some(proposal);
                    vs.validation = Validation::Ok;
                    vs.sent_prepare = Some(proposal.digest);
                    vs.prepares.add(me, proposal.digest);
                    vs.prepares.add(leader, proposal.digest);
                    self.round.valid.insert(proposal.digest, proposal);
                }
                SentVote::Commit { view: v, digest } => {
                    let vs = self.view_state(v);
                    vs.sent_commit = Some(digest);
                    vs.commits.add(me, digest);
                }
            }
        }
        if let Some(cert) = &votes.prepared {
            self.round.valid.insert(cert.proposal.digest, cert.proposal);
        }
        self.round.prepared = votes.prepared;
        self.round.prune(view);
        if !self.round.active {
            // Re-announce the view change we were waiting on; it is the same message as before
            // (no certificate can appear in a view we had already left).
            let vc = ViewChange {
                height,
                new_view: view,
                prepared: self.round.prepared.clone(),
            };
            self.round
                .view_changes
                .entry(view)
                .or_default()
                .insert(me, vc.clone());
            self.emit(Action::Broadcast {
                msg: Message::ViewChange(vc),
            });
            self.try_new_view();
        } else if let Some(vs) = self.round.views.get_mut(&view)
            && let Some(proposal) = vs.pre_prepare
            && vs.validation == Validation::NotAsked
        {
            vs.validation = Validation::Pending;
            self.emit(Action::Validate {
                height,
                view,
                proposal,
            });
        }
    }
}

/// The lock rule: among the ViewChanges, the proposal of the highest-view prepared certificate
/// (None if nobody prepared anything). Two different proposals certified in the same view
/// cannot both be genuine, so that NewView is rejected.
struct ConflictingCertificates;

fn locked_proposal(
    view_changes: &[(MemberIndex, ViewChange)],
) -> Result<Option<Proposal>, ConflictingCertificates> {
    let mut best: Option<&PreparedCert> = None;
    let mut conflict = false;
    for (_, vc) in view_changes {
        let Some(cert) = &vc.prepared else {
            continue;
        };
        match best {
            Some(b) if cert.view < b.view => {}
            Some(b) if cert.view == b.view => conflict |= cert.proposal != b.proposal,
            _ => {
                best = Some(cert);
                conflict = false;
            }
        }
    }
    if conflict {
        return Err(ConflictingCertificates);
    }
    Ok(best.map(|c| c.proposal))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic stand-in for a receipt id: binds height, call and parent receipt.
    fn receipt(height: Height, call_id: &CallId, prev: &Digest) -> Digest {
        let mut d = [0u8; 32];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = call_id[i] ^ prev[i].rotate_left(3) ^ (height as u8).wrapping_add(i as u8);
        }
        d
    }

    fn call(n: u8) -> CallId {
        [n; 32]
    }

    type Filter = Box<dyn Fn(MemberIndex, MemberIndex, &Message) -> bool>;

    /// A synchronous in-order network where the driver executes and validates instantly.
    struct Harness {
        members: Vec<Member>,
        persisted: Vec<Persisted>,
        inbox: VecDeque<(MemberIndex, Event)>,
        committed: Vec<Vec<Decision>>,
        replies: Vec<(MemberIndex, CallId, CallResult)>,
        sent: Vec<(MemberIndex, Message)>,
        timers: Vec<Option<(Height, View, u64)>>,
        drop_if: Filter,
        /// Members whose re-execution disagrees with every proposal but their own.
        disagree: Vec<MemberIndex>,
        now: u64,
    }

    impl Harness {
        fn new(k: usize) -> Self {
            Harness {
                members: (0..k)
                    .map(|i| Member::new(Config::new(k, i, 100)))
                    .collect(),
                persisted: vec![Persisted::default(); k],
                inbox: VecDeque::new(),
                committed: vec![Vec::new(); k],
                replies: Vec::new(),
                sent: Vec::new(),
                timers: vec![None; k],
                drop_if: Box::new(|_, _, _| false),
                disagree: Vec::new(),
                now: 0,
            }
        }

        fn prev(&self, at: MemberIndex, height: Height) -> Digest {
            match height {
                0 => [0; 32],
                h => self.persisted[at].log[h as usize - 1].proposal.digest,
            }
        }

        fn input(&mut self, at: MemberIndex, event: Event) {
            self.inbox.push_back((at, event));
        }

        fn run(&mut self) {
            let mut budget = 100_000;
            while let Some((at, event)) = self.inbox.pop_front() {
                budget -= 1;
                assert!(budget > 0, "harness did not quiesce");
                let actions = self.members[at].handle(event, self.now);
                self.perform(at, actions);
            }
        }

        fn perform(&mut self, at: MemberIndex, actions: Vec<Action>) {
            let k = self.members.len();
            for action in actions {
                match action {
                    Action::Send { to, msg } => self.deliver(at, to, msg),
                    Action::Broadcast { msg } => {
                        for to in (0..k).filter(|t| *t != at) {
                            self.deliver(at, to, msg.clone());
                        }
                    }
                    Action::Persist(change) => self.persisted[at].apply(&change),
                    Action::Execute {
                        height,
                        view,
                        call_id,
                    } => {
                        let digest = receipt(height, &call_id, &self.prev(at, height));
                        self.input(
                            at,
                            Event::Executed {
                                height,
                                view,
                                call_id,
                                digest,
                            },
                        );
                    }
                    Action::Validate {
                        height,
                        view,
                        proposal,
                    } => {
                        let expected = receipt(height, &proposal.call_id, &self.prev(at, height));
                        let ok = expected == proposal.digest && !self.disagree.contains(&at);
                        let digest = proposal.digest;
                        self.input(
                            at,
                            Event::Validated {
                                height,
                                view,
                                digest,
                                ok,
                            },
                        );
                    }
                    Action::Commit(d) => self.committed[at].push(d),
                    Action::Reply { call_id, result } => self.replies.push((at, call_id, result)),
                    Action::SetTimer {
                        height,
                        view,
                        at_ms,
                    } => self.timers[at] = Some((height, view, at_ms)),
                }
            }
        }

        fn deliver(&mut self, from: MemberIndex, to: MemberIndex, msg: Message) {
            self.sent.push((from, msg.clone()));
            if !(self.drop_if)(from, to, &msg) {
                self.input(to, Event::Message { from, msg });
            }
        }

        /// Fires the latest timer of each listed member (time jumps to the latest deadline).
        fn fire_timers(&mut self, members: &[MemberIndex]) {
            for &m in members {
                if let Some((height, view, at_ms)) = self.timers[m].take() {
                    self.now = self.now.max(at_ms);
                    self.input(m, Event::Timer { height, view });
                }
            }
            self.run();
        }
    }

    fn proposal_of(h: &Harness, at: MemberIndex, call_id: CallId, height: Height) -> Proposal {
        Proposal {
            call_id,
            digest: receipt(height, &call_id, &h.prev(at, height)),
            proposer: 0,
        }
    }

    #[test]
    fn normal_case_four_members() {
        let mut h = Harness::new(4);
        h.input(2, Event::Submit { call_id: call(1) });
        h.run();
        let expected = proposal_of(&h, 0, call(1), 0);
        for m in 0..4 {
            assert_eq!(h.committed[m].len(), 1, "member {m} finalized");
            assert_eq!(h.committed[m][0].proposal, expected);
            assert!(h.committed[m][0].signers.len() >= 3);
        }
        let expected_reply = CallResult::Finalized {
            height: 0,
            digest: expected.digest,
        };
        assert_eq!(h.replies, vec![(2, call(1), expected_reply)]);
        // Leader sends no Prepare; each replica one Prepare; everybody one Commit.
        let prepares = h
            .sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::Prepare { .. }));
        assert_eq!(prepares.count(), 3 * 3);
        // A second call goes to height 1, on top of the first.
        h.input(3, Event::Submit { call_id: call(2) });
        h.run();
        for m in 0..4 {
            assert_eq!(h.committed[m].len(), 2);
            assert_eq!(h.committed[m][1].proposal, proposal_of(&h, 0, call(2), 1));
        }
        // A retry of the first call is answered from the log, not sequenced again.
        h.input(1, Event::Submit { call_id: call(1) });
        h.run();
        assert_eq!(h.committed[1].len(), 2);
        assert!(matches!(
            h.replies.last(),
            Some((1, c, CallResult::Finalized { height: 0, .. })) if *c == call(1)
        ));
    }

    #[test]
    fn single_member_committee_decides_alone() {
        let mut h = Harness::new(1);
        h.input(0, Event::Submit { call_id: call(7) });
        h.run();
        assert_eq!(h.committed[0].len(), 1);
        assert_eq!(h.replies.len(), 1);
    }

    #[test]
    fn view_change_reproposes_the_locked_value() {
        let mut h = Harness::new(4);
        // Only members 0 and 3 get enough Prepares to become prepared; every Commit is lost.
        h.drop_if = Box::new(|_, to, msg| {
            matches!(msg, Message::Commit { .. })
                || (matches!(msg, Message::Prepare { .. }) && (to == 1 || to == 2))
        });
        h.input(0, Event::Submit { call_id: call(1) });
        h.run();
        assert!(h.committed.iter().all(Vec::is_empty));
        let locked = proposal_of(&h, 0, call(1), 0);
        assert_eq!(
            h.persisted[3]
                .votes
                .as_ref()
                .and_then(|v| v.prepared.clone())
                .map(|c| c.proposal),
            Some(locked)
        );
        // The old leader goes dark; the next leader holds a different call it would like to run.
        h.drop_if = Box::new(|from, to, _| from == 0 || to == 0);
        h.input(1, Event::Submit { call_id: call(2) });
        h.input(2, Event::Submit { call_id: call(2) });
        h.run();
        h.fire_timers(&[1, 2, 3]);
        let new_view = h.sent.iter().find_map(|(from, m)| match m {
            Message::NewView { view, proposal, .. } => Some((*from, *view, *proposal)),
            _ => None,
        });
        assert_eq!(new_view, Some((1, 1, Some(locked))));
        // Height 0 keeps the lock; height 1's view 0 is led by the member that proposed height
        // 0's value (the dark member 0), so it takes one more view change.
        for m in 1..4 {
            assert_eq!(
                h.committed[m][0].proposal, locked,
                "member {m} kept the lock"
            );
        }
        h.fire_timers(&[1, 2, 3]);
        for m in 1..4 {
            assert_eq!(h.committed[m].len(), 2, "member {m}");
            assert_eq!(h.committed[m][1].proposal.call_id, call(2));
        }
    }

    /// A new leader re-proposing a certified value it never validated must not sign it: a
    /// Commit is a signature on the receipt, which vouches for a result the signer computed.
    #[test]
    fn a_new_leader_signs_a_locked_value_only_if_its_own_run_agrees() {
        let mut h = Harness::new(4);
        // Member 1 computes different results (another build). Every Commit of view 0 is lost,
        // so 0, 2 and 3 end view 0 prepared and the value is locked.
        h.disagree = vec![1];
        h.drop_if = Box::new(|_, _, msg| matches!(msg, Message::Commit { view: 0, .. }));
        h.input(0, Event::Submit { call_id: call(1) });
        h.run();
        assert!(h.committed.iter().all(Vec::is_empty));
        let locked = proposal_of(&h, 0, call(1), 0);
        // View 1 is led by member 1, which must re-propose the lock.
        h.drop_if = Box::new(|_, _, _| false);
        h.fire_timers(&[0, 1, 2, 3]);
        let new_view = h.sent.iter().find_map(|(from, m)| match m {
            Message::NewView { view, proposal, .. } => Some((*from, *view, *proposal)),
            _ => None,
        });
        assert_eq!(new_view, Some((1, 1, Some(locked))));
        let commits_by_1 = h
            .sent
            .iter()
            .filter(|(from, m)| *from == 1 && matches!(m, Message::Commit { .. }))
            .count();
        assert_eq!(commits_by_1, 0, "member 1 signed a value it disagrees with");
        // The three who agree finalize it without member 1's signature.
        for m in [0, 2, 3] {
            assert_eq!(h.committed[m].len(), 1, "member {m}");
            assert_eq!(h.committed[m][0].proposal, locked);
            assert!(!h.committed[m][0].signers.contains(&1));
        }
    }

    /// kill -9 of a new leader between its NewView and the end of its validation: restarted,
    /// it validates the locked value again and signs it only if its run agrees.
    #[test]
    fn a_new_leader_restarted_mid_validation_validates_again_before_signing() {
        let locked = Proposal {
            call_id: call(1),
            digest: receipt(0, &call(1), &[0; 32]),
            proposer: 0,
        };
        let persisted = Persisted {
            log: Vec::new(),
            votes: Some(HeightVotes {
                height: 0,
                highest_view: 1,
                activated: vec![(1, Some(locked))],
                sent: Vec::new(),
                prepared: None,
            }),
        };
        let signs = |agrees: bool| {
            // Member 1 leads view 1.
            let mut m = Member::new(Config::new(4, 1, 100));
            let mut p = persisted.clone();
            let restart = Event::Restart {
                persisted: p.clone(),
            };
            let actions = feed(&mut m, &mut p, restart, 0);
            assert!(
                actions.contains(&Action::Validate {
                    height: 0,
                    view: 1,
                    proposal: locked
                }),
                "{actions:?}"
            );
            let mut actions = actions;
            for from in [2, 3] {
                let prepare = Message::Prepare {
                    height: 0,
                    view: 1,
                    digest: locked.digest,
                };
                actions.extend(feed(
                    &mut m,
                    &mut p,
                    Event::Message { from, msg: prepare },
                    0,
                ));
            }
            let validated = Event::Validated {
                height: 0,
                view: 1,
                digest: locked.digest,
                ok: agrees,
            };
            actions.extend(feed(&mut m, &mut p, validated, 0));
            actions.iter().any(|x| {
                matches!(
                    x,
                    Action::Broadcast {
                        msg: Message::Commit { .. }
                    }
                )
            })
        };
        assert!(signs(true), "an agreeing leader commits once validated");
        assert!(
            !signs(false),
            "a disagreeing leader signed after its restart"
        );
    }

    #[test]
    fn replica_rejects_new_view_that_drops_the_lock() {
        let locked = Proposal {
            call_id: call(1),
            digest: receipt(0, &call(1), &[0; 32]),
            proposer: 0,
        };
        let vc = |prepared: Option<PreparedCert>| ViewChange {
            height: 0,
            new_view: 1,
            prepared,
        };
        let cert = PreparedCert {
            view: 0,
            proposal: locked,
            prepares: vec![0, 2, 3],
        };
        let vcs = vec![(1, vc(None)), (2, vc(None)), (3, vc(Some(cert)))];
        let new_view = |proposal| Event::Message {
            from: 1,
            msg: Message::NewView {
                height: 0,
                view: 1,
                view_changes: vcs.clone(),
                proposal,
            },
        };
        let mut m = Member::new(Config::new(4, 2, 100));
        assert!(m.handle(new_view(None), 0).is_empty(), "lock dropped");
        let fresh = Proposal {
            call_id: call(9),
            digest: receipt(0, &call(9), &[0; 32]),
            proposer: 0,
        };
        assert!(
            m.handle(new_view(Some(fresh)), 0).is_empty(),
            "lock replaced"
        );
        let actions = m.handle(new_view(Some(locked)), 0);
        assert!(actions.contains(&Action::Validate {
            height: 0,
            view: 1,
            proposal: locked
        }));
    }

    #[test]
    fn second_pre_prepare_in_a_view_is_refused() {
        let a = Proposal {
            call_id: call(1),
            digest: receipt(0, &call(1), &[0; 32]),
            proposer: 0,
        };
        let b = Proposal {
            call_id: call(2),
            digest: receipt(0, &call(2), &[0; 32]),
            proposer: 0,
        };
        let pre_prepare = |from, proposal| Event::Message {
            from,
            msg: Message::PrePrepare {
                height: 0,
                view: 0,
                proposal,
            },
        };
        let mut m = Member::new(Config::new(4, 1, 100));
        // Not from the leader of view 0: ignored.
        assert!(m.handle(pre_prepare(2, a), 0).is_empty());
        let actions = m.handle(pre_prepare(0, a), 0);
        assert!(actions.contains(&Action::Validate {
            height: 0,
            view: 0,
            proposal: a
        }));
        let validated = Event::Validated {
            height: 0,
            view: 0,
            digest: a.digest,
            ok: true,
        };
        let actions = m.handle(validated, 0);
        assert!(actions.iter().any(|x| matches!(
            x,
            Action::Broadcast { msg: Message::Prepare { digest, .. } } if *digest == a.digest
        )));
        // The equivocating leader's second proposal leads to nothing at all.
        let actions = m.handle(pre_prepare(0, b), 0);
        assert!(
            actions
                .iter()
                .all(|x| !matches!(x, Action::Validate { .. } | Action::Broadcast { .. })),
            "{actions:?}"
        );
    }

    /// Feeds one event and applies its Persist actions, like a driver would.
    fn feed(m: &mut Member, p: &mut Persisted, e: Event, now: u64) -> Vec<Action> {
        let actions = m.handle(e, now);
        for a in &actions {
            if let Action::Persist(c) = a {
                p.apply(c);
            }
        }
        actions
    }

    #[test]
    fn restart_keeps_votes() {
        let a = Proposal {
            call_id: call(1),
            digest: receipt(0, &call(1), &[0; 32]),
            proposer: 0,
        };
        let b = Proposal {
            call_id: call(2),
            digest: receipt(0, &call(2), &[0; 32]),
            proposer: 0,
        };
        let msg = |from, msg| Event::Message { from, msg };
        let run = |forget: bool| {
            let mut config = Config::new(4, 1, 100);
            config.planted.forget_votes_on_restart = forget;
            let mut m = Member::new(config);
            let mut persisted = Persisted::default();
            let p = &mut persisted;
            let pp = Message::PrePrepare {
                height: 0,
                view: 0,
                proposal: a,
            };
            feed(&mut m, p, msg(0, pp), 0);
            let validated = Event::Validated {
                height: 0,
                view: 0,
                digest: a.digest,
                ok: true,
            };
            feed(&mut m, p, validated, 0);
            for from in [2, 3] {
                let prepare = Message::Prepare {
                    height: 0,
                    view: 0,
                    digest: a.digest,
                };
                feed(&mut m, p, msg(from, prepare), 0);
            }
            assert!(p.votes.as_ref().is_some_and(|v| v.prepared.is_some()));
            // Crash: a fresh member rebuilt from what was persisted.
            let mut m = Member::new(m.config().clone());
            let restart = Event::Restart {
                persisted: p.clone(),
            };
            let mut actions = feed(&mut m, p, restart, 1000);
            // The leader equivocates towards the restarted member.
            let pp_b = Message::PrePrepare {
                height: 0,
                view: 0,
                proposal: b,
            };
            let after_b = feed(&mut m, p, msg(0, pp_b), 1000);
            actions.extend(after_b.iter().cloned());
            // A validation still running postpones the view change: finish it first.
            let validating = after_b.iter().find_map(|x| match x {
                Action::Validate {
                    height,
                    view,
                    proposal,
                } => Some((*height, *view, proposal.digest)),
                _ => None,
            });
            if let Some((height, view, digest)) = validating {
                let validated = Event::Validated {
                    height,
                    view,
                    digest,
                    ok: true,
                };
                actions.extend(feed(&mut m, p, validated, 1000));
            }
            let timer = actions.iter().find_map(|x| match x {
                Action::SetTimer {
                    height,
                    view,
                    at_ms,
                } => Some((*height, *view, *at_ms)),
                _ => None,
            });
            let (height, view, at_ms) = timer.expect("a member with work arms its timer");
            let after_timer = feed(&mut m, p, Event::Timer { height, view }, at_ms);
            let cert = after_timer.iter().find_map(|x| match x {
                Action::Broadcast {
                    msg: Message::ViewChange(vc),
                } => Some(vc.prepared.clone()),
                _ => None,
            });
            (after_b, cert)
        };
        let (after_b, cert) = run(false);
        assert!(
            after_b
                .iter()
                .all(|x| !matches!(x, Action::Validate { .. } | Action::Broadcast { .. })),
            "restarted member must not vote for a second proposal: {after_b:?}"
        );
        assert_eq!(cert.flatten().map(|c| c.proposal), Some(a));
        // With the planted bug the member forgets its prepared certificate and votes again.
        let (after_b, cert) = run(true);
        assert!(after_b.iter().any(|x| matches!(x, Action::Validate { .. })));
        assert_eq!(
            cert,
            Some(None),
            "bug: the view change carries no certificate"
        );
    }

    #[test]
    fn malformed_and_far_away_input_is_ignored() {
        let mut m = Member::new(Config::new(4, 1, 100));
        let msg = |from, msg| Event::Message { from, msg };
        let digest = [1; 32];
        let far = [
            msg(
                9,
                Message::Prepare {
                    height: 0,
                    view: 0,
                    digest,
                },
            ),
            msg(
                1,
                Message::Prepare {
                    height: 0,
                    view: 0,
                    digest,
                },
            ),
            msg(
                2,
                Message::Prepare {
                    height: 0,
                    view: u64::MAX,
                    digest,
                },
            ),
            msg(
                2,
                Message::Commit {
                    height: 0,
                    view: VIEW_WINDOW + 1,
                    digest,
                },
            ),
            msg(
                2,
                Message::ViewChange(ViewChange {
                    height: 0,
                    new_view: u64::MAX,
                    prepared: None,
                }),
            ),
            msg(
                2,
                Message::Decided(Decision {
                    height: 0,
                    proposal: Proposal {
                        call_id: call(1),
                        digest,
                        proposer: 0,
                    },
                    signers: vec![2, 2, 2, 99],
                }),
            ),
            msg(
                2,
                Message::SyncRequest {
                    from_height: u64::MAX,
                },
            ),
            msg(
                1,
                Message::NewView {
                    height: 0,
                    view: 1,
                    view_changes: vec![
                        (
                            1,
                            ViewChange {
                                height: 0,
                                new_view: 1,
                                prepared: None,
                            }
                        );
                        100
                    ],
                    proposal: None,
                },
            ),
        ];
        for event in far {
            let actions = m.handle(event.clone(), 0);
            assert!(actions.is_empty(), "{event:?} -> {actions:?}");
        }
        // A message from far in the future only asks its sender for a sync, once per timeout.
        let future = msg(
            3,
            Message::Commit {
                height: u64::MAX,
                view: 0,
                digest,
            },
        );
        let actions = m.handle(future.clone(), 0);
        assert_eq!(
            actions,
            vec![Action::Send {
                to: 3,
                msg: Message::SyncRequest { from_height: 0 }
            }]
        );
        assert!(m.handle(future, 10).is_empty());
        assert_eq!(m.height(), 0);
        assert_eq!(m.view(), 0);
    }

    #[test]
    fn decided_call_is_never_proposed_again() {
        let mut m = Member::new(Config::new(4, 1, 100));
        let a = Proposal {
            call_id: call(1),
            digest: receipt(0, &call(1), &[0; 32]),
            proposer: 0,
        };
        let decided = Message::Decided(Decision {
            height: 0,
            proposal: a,
            signers: vec![0, 2, 3],
        });
        let actions = m.handle(
            Event::Message {
                from: 0,
                msg: decided,
            },
            0,
        );
        assert!(actions.contains(&Action::Commit(Decision {
            height: 0,
            proposal: a,
            signers: vec![0, 2, 3]
        })));
        // The same call proposed again at height 1 is refused before any re-execution.
        let again = Proposal {
            call_id: call(1),
            digest: receipt(1, &call(1), &a.digest),
            proposer: 0,
        };
        let pp = Message::PrePrepare {
            height: 1,
            view: 0,
            proposal: again,
        };
        let actions = m.handle(Event::Message { from: 0, msg: pp }, 0);
        assert!(
            actions
                .iter()
                .all(|x| !matches!(x, Action::Validate { .. } | Action::Broadcast { .. }))
        );
        let actions = m.handle(Event::Submit { call_id: call(1) }, 0);
        assert_eq!(
            actions,
            vec![Action::Reply {
                call_id: call(1),
                result: CallResult::Finalized {
                    height: 0,
                    digest: a.digest
                }
            }]
        );
    }

    #[test]
    fn member_alone_in_a_view_change_retransmits_instead_of_racing_ahead() {
        let mut m = Member::new(Config::new(4, 1, 100));
        let actions = m.handle(Event::Submit { call_id: call(1) }, 0);
        let timer_at = |actions: &[Action]| {
            actions.iter().find_map(|a| match a {
                Action::SetTimer { view, at_ms, .. } => Some((*view, *at_ms)),
                _ => None,
            })
        };
        assert_eq!(timer_at(&actions), Some((0, 100)));
        let actions = m.handle(Event::Timer { height: 0, view: 0 }, 100);
        assert_eq!(m.view(), 1);
        // Nobody else asked for view 1 yet: retransmit after a base timeout, do not burn views.
        assert_eq!(timer_at(&actions), Some((1, 200)));
        for now in [200, 300, 400] {
            let actions = m.handle(Event::Timer { height: 0, view: 1 }, now);
            assert_eq!(m.view(), 1);
            assert!(actions.iter().any(|a| matches!(
                a,
                Action::Broadcast { msg: Message::ViewChange(vc) } if vc.new_view == 1
            )));
        }
        // Once a quorum reached view 1, the full (doubled) view timeout runs.
        let vc = |from| Event::Message {
            from,
            msg: Message::ViewChange(ViewChange {
                height: 0,
                new_view: 1,
                prepared: None,
            }),
        };
        m.handle(vc(2), 450);
        let actions = m.handle(vc(3), 460);
        assert_eq!(timer_at(&actions), Some((1, 660)));
        // Member 1 leads view 1 and is still executing the call when the timer fires: the
        // delay is its own, so it keeps the view and waits another full timeout.
        let actions = m.handle(Event::Timer { height: 0, view: 1 }, 660);
        assert_eq!(m.view(), 1);
        assert_eq!(timer_at(&actions), Some((1, 860)));
    }
}
