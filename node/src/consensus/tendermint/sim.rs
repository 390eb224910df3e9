//! A seeded simulator of whole committees of [`Sequencer`]s (TigerBeetle's VOPR is the model):
//! fakes of the transport (loss, duplication, delay and reordering, asymmetric partitions that
//! heal), of storage (failed/torn WAL writes that stop the member, crash and restart from what
//! was durable), of the executor (slow calls, interrupted executions, clients that give up and
//! cancel) and of the clock, plus ONE Byzantine member (equivocating votes and proposals, forged
//! decisions, selective silence, replay, Forward floods, censoring as leader).
//!
//! Invariants, checked as every step performs its actions: at most one decided value per
//! height (every certificate that verifies, honest or not, names the same value), no vote or
//! proposal sent after a failed persist of the same list and no honest member signing two
//! votes for one (height, round, type), each call id decided at most once, a call answered
//! `Failed` never decided, and at the end (faults healed for `settle_ms`) every call whose
//! member did not crash is decided or `Failed`, and no member is stuck catching up.
//!
//! `TM_SIM_SEEDS=<n>` runs n seeds (default 200); `TM_SIM_SEED=<n>` replays one with a trace.
//! Signatures are keyed BLAKE3 MACs (a member can sign only with its own key; aggregates are
//! XORs checked against the signers' MACs), so thousands of seeds run in seconds; one test
//! runs a few seeds with the blst signer of `tests.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use super::sequencer::{
    Action, CallId, CallResult, Decided, Event, Message, PlantedBugs, ReceiptId, Record, Sequencer,
    SequencerConfig,
};
use super::*;

// ---------------------------------------------------------------------------------------------
// A fast signer

#[derive(Clone)]
pub(super) struct Mac {
    secrets: Arc<Vec<[u8; 32]>>,
    me: u32,
}

fn mac(secret: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(secret, msg).as_bytes()
}

impl Verifier for Mac {
    fn verify(&self, member: MemberIndex, msg: &[u8], signature: &[u8]) -> bool {
        self.secrets
            .get(member.0 as usize)
            .is_some_and(|s| mac(s, msg).as_slice() == signature)
    }
    fn aggregate(&self, signatures: &[&[u8]]) -> Option<Vec<u8>> {
        let mut out = [0u8; 32];
        for s in signatures {
            let s: [u8; 32] = (*s).try_into().ok()?;
            out.iter_mut().zip(s).for_each(|(o, b)| *o ^= b);
        }
        Some(out.to_vec())
    }
    fn verify_aggregate(&self, members: &[MemberIndex], msg: &[u8], signature: &[u8]) -> bool {
        let mut out = [0u8; 32];
        for m in members {
            let Some(s) = self.secrets.get(m.0 as usize) else {
                return false;
            };
            out.iter_mut().zip(mac(s, msg)).for_each(|(o, b)| *o ^= b);
        }
        !members.is_empty() && out.as_slice() == signature
    }
}

impl Signing for Mac {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        mac(&self.secrets[self.me as usize], msg).to_vec()
    }
}

pub(super) fn mac_keys(k: u32) -> impl Fn(u32) -> Mac {
    let secrets: Arc<Vec<[u8; 32]>> = Arc::new(
        (0..k)
            .map(|i| *blake3::hash(format!("sim-key-{i}").as_bytes()).as_bytes())
            .collect(),
    );
    move |me| Mac {
        secrets: secrets.clone(),
        me,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// splitmix64: the simulations' only source of randomness, seeded.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_be_bytes());
        }
        out
    }
}

fn domain() -> Domain {
    Domain {
        network: "onvm-sim".into(),
        program: [9; 32],
    }
}

/// The program's call limit: the VM kills an execution (or a member's re-execution) at this
/// wall-clock time, a local, non-reproducible failure. Timeouts derive from it.
const MAX_CALL_MS: u64 = 1_000;
/// The simulated `committee.view_timeout_ms`: shorter than the slowest calls, as the node's
/// default (2 s) is shorter than its `vm.max_call_ms` (10 s).
const VIEW_TIMEOUT_MS: u64 = 300;

/// Timeouts far below what `MAX_CALL_MS` needs (a program configured with too short a limit):
/// only the members' hold during their own execution or validation lets a slow call through.
fn undersized_timeouts() -> TimeoutConfig {
    TimeoutConfig {
        propose_ms: 300,
        propose_delta_ms: 300,
        prevote_ms: 100,
        prevote_delta_ms: 50,
        precommit_ms: 100,
        precommit_delta_ms: 50,
        rebroadcast_ms: 600,
        // Below one re-execution of a slow call.
        max_ms: 700,
    }
}

/// The receipt every correct execution of `call` at `height` on top of `prev` gives.
fn receipt(height: u64, call: &CallId, prev: &ReceiptId) -> ReceiptId {
    let mut h = blake3::Hasher::new();
    h.update(b"receipt")
        .update(&height.to_be_bytes())
        .update(call)
        .update(prev);
    *h.finalize().as_bytes()
}

// ---------------------------------------------------------------------------------------------
// Scenario

#[derive(Clone, Debug)]
struct Scenario {
    k: u32,
    calls: usize,
    /// Faults happen in `[0, fault_ms)`; then the network is perfect and nobody crashes.
    fault_ms: u64,
    /// How long after the faults every call must be decided.
    settle_ms: u64,
    loss: u64,
    dup: u64,
    reorder: u64,
    partitions: usize,
    crashes: usize,
    /// Per mille of WAL writes that fail (the member stops; restarts when the disk is back).
    disk: u64,
    slow: u64,
    /// Durations of slow calls; above `MAX_CALL_MS` the VM kills them (never decided).
    slow_ms: (u64, u64),
    /// The program's timeouts are not derived from `MAX_CALL_MS` (`undersized_timeouts`).
    undersized: bool,
    /// An adversarial network: every `DecisionRequest` sent during the faults is lost.
    drop_requests: bool,
    /// Per mille of executions interrupted (a local wall-clock timeout).
    interrupted: u64,
    give_up: u64,
    byzantine: bool,
    /// Which member is Byzantine (random when None).
    byz_at: Option<usize>,
    /// The Byzantine member's equivocations, forgeries, replays and floods.
    byz_noise: bool,
    censor: bool,
    planted: PlantedBugs,
}

impl Scenario {
    fn random(rng: &mut Rng) -> Scenario {
        let k = [4, 4, 4, 4, 1, 2, 3, 7][rng.range(0, 7) as usize];
        let byzantine = k >= 4 && rng.chance(600);
        Scenario {
            k,
            calls: 6,
            fault_ms: 10_000,
            settle_ms: 90_000,
            loss: rng.range(0, 150),
            dup: rng.range(0, 80),
            reorder: rng.range(0, 100),
            partitions: rng.range(0, 2) as usize,
            crashes: rng.range(0, 2) as usize,
            disk: if rng.chance(300) { 20 } else { 0 },
            slow: 150,
            slow_ms: (300, MAX_CALL_MS),
            undersized: false,
            drop_requests: false,
            interrupted: 60,
            give_up: 150,
            byzantine,
            byz_at: None,
            byz_noise: true,
            censor: byzantine && rng.chance(500),
            planted: PlantedBugs::default(),
        }
    }

    fn quiet(k: u32) -> Scenario {
        Scenario {
            k,
            calls: 6,
            fault_ms: 10_000,
            settle_ms: 60_000,
            loss: 0,
            dup: 0,
            reorder: 0,
            partitions: 0,
            crashes: 0,
            disk: 0,
            slow: 0,
            slow_ms: (300, MAX_CALL_MS),
            undersized: false,
            drop_requests: false,
            interrupted: 0,
            give_up: 0,
            byzantine: false,
            byz_at: None,
            byz_noise: true,
            censor: false,
            planted: PlantedBugs::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator

#[derive(Debug)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    Input {
        to: usize,
        inc: u64,
        event: Event,
    },
    ExecDone {
        to: usize,
        inc: u64,
        height: Height,
        round: u32,
        call_id: CallId,
    },
    ValDone {
        to: usize,
        inc: u64,
        height: Height,
        round: u32,
        value: Value,
    },
    Submit {
        call: usize,
    },
    GiveUp {
        call: usize,
    },
    Crash {
        who: usize,
    },
    Restart {
        who: usize,
    },
    ByzTick,
    ByzSubmit,
}

struct CallRec {
    id: CallId,
    origin: usize,
    duration_ms: u64,
    /// Submitted at the Byzantine member: no liveness promise.
    byzantine_origin: bool,
    failed: bool,
    origin_crashed: bool,
    decided: Option<u64>,
}

struct Node<S> {
    seq: Option<Sequencer<S>>,
    inc: u64,
    wal: Vec<WalEntry>,
    decisions: BTreeMap<u64, Decided>,
    /// The glue's applied state: (call, receipt) per height.
    state: Vec<(CallId, ReceiptId)>,
    /// Calls whose client gave up here: their execution here is cancelled.
    cancelled: HashSet<CallId>,
}

struct Sim<S> {
    rng: Rng,
    now: u64,
    seqno: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    evs: HashMap<u64, Ev>,
    sc: Scenario,
    signer: Box<dyn Fn(u32) -> S>,
    verifier: S,
    committee: Committee,
    nodes: Vec<Node<S>>,
    byz: Option<usize>,
    victims: Vec<usize>,
    calls: Vec<CallRec>,
    by_id: HashMap<CallId, usize>,
    decided: BTreeMap<u64, Value>,
    /// Ordered: the Byzantine flood picks from it, and a seed must replay step for step.
    decided_calls: BTreeMap<CallId, u64>,
    failed: HashSet<CallId>,
    votes: HashMap<(usize, u64, u32, VoteType), NilOrVal<ValueId>>,
    /// Directed links blocked until a time.
    blocked: Vec<(usize, usize, u64, u64)>,
    wire: Vec<Message>,
    violations: Vec<String>,
    faults: BTreeMap<&'static str, u64>,
    steps: u64,
    trace: bool,
}

impl<S: Signing + Clone + 'static> Sim<S> {
    fn new(seed: u64, sc: Scenario, signer: Box<dyn Fn(u32) -> S>, trace: bool) -> Sim<S> {
        let mut rng = Rng(seed ^ 0x5eed);
        let k = sc.k;
        let byz = (sc.byzantine && k >= 4).then(|| {
            sc.byz_at
                .unwrap_or_else(|| rng.range(0, u64::from(k) - 1) as usize)
        });
        let nodes = (0..k)
            .map(|_| Node {
                seq: None,
                inc: 0,
                wal: Vec::new(),
                decisions: BTreeMap::new(),
                state: Vec::new(),
                cancelled: HashSet::new(),
            })
            .collect::<Vec<_>>();
        let verifier = signer(0);
        let mut sim = Sim {
            rng,
            now: 0,
            seqno: 0,
            queue: BinaryHeap::new(),
            evs: HashMap::new(),
            committee: Committee::new(k).unwrap_or_else(|| unreachable!("k > 0")),
            sc,
            signer,
            verifier,
            nodes,
            byz,
            victims: Vec::new(),
            calls: Vec::new(),
            by_id: HashMap::new(),
            decided: BTreeMap::new(),
            decided_calls: BTreeMap::new(),
            failed: HashSet::new(),
            votes: HashMap::new(),
            blocked: Vec::new(),
            wire: Vec::new(),
            violations: Vec::new(),
            faults: BTreeMap::new(),
            steps: 0,
            trace,
        };
        for i in 0..k as usize {
            sim.boot(i);
        }
        sim.plan();
        sim
    }

    fn honest(&self) -> Vec<usize> {
        (0..self.sc.k as usize)
            .filter(|i| Some(*i) != self.byz)
            .collect()
    }

    fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    fn at(&mut self, delay: u64, ev: Ev) {
        self.seqno += 1;
        self.queue.push(Reverse((self.now + delay, self.seqno)));
        self.evs.insert(self.seqno, ev);
    }

    fn violation(&mut self, what: String) {
        if self.trace {
            println!("  !! VIOLATION at {} ms: {what}", self.now);
        }
        self.violations.push(what);
    }

    fn config(&self, i: usize) -> SequencerConfig {
        let me = MemberIndex(i as u32);
        let mut c = if self.sc.undersized {
            SequencerConfig::with_timeouts(domain(), self.sc.k, me, undersized_timeouts())
        } else {
            // The node's own derivation, with a view timeout shorter than the slowest call.
            SequencerConfig::with_timeouts(
                domain(),
                self.sc.k,
                me,
                TimeoutConfig::new(VIEW_TIMEOUT_MS, MAX_CALL_MS),
            )
        };
        // Longer than any run: the liveness check must see every call decided, not dropped.
        c.pending_ttl_ms = 10_000_000;
        c.planted = self.sc.planted;
        c.planted.censor = Some(i) == self.byz && self.sc.censor;
        c
    }

    /// (Re)starts member `i` from what its storage holds.
    fn boot(&mut self, i: usize) {
        let config = self.config(i);
        let seq = match Sequencer::new(config, (self.signer)(i as u32)) {
            Ok(s) => s,
            Err(e) => return self.violation(format!("config refused: {e:?}")),
        };
        let node = &mut self.nodes[i];
        node.inc += 1;
        node.seq = Some(seq);
        let last = node.decisions.values().next_back().cloned();
        // The glue re-applies the last decision (a crash between Persist and Commit).
        if let Some(d) = &last
            && node.state.len() as u64 == d.height.0
        {
            node.state.push((d.value.call_id, d.value.receipt_id));
        }
        let wal = node.wal.clone();
        self.input(i, Event::Restart { wal, last });
    }

    fn plan(&mut self) {
        let honest = self.honest();
        let fault_ms = self.sc.fault_ms;
        for c in 0..self.sc.calls {
            let origin = honest[self.rng.range(0, honest.len() as u64 - 1) as usize];
            let slow = self.rng.chance(self.sc.slow);
            let duration_ms = if slow {
                self.fault("slow call");
                self.rng.range(self.sc.slow_ms.0, self.sc.slow_ms.1)
            } else {
                self.rng.range(1, 40)
            };
            self.add_call(origin, duration_ms, false);
            let at = self.rng.range(0, fault_ms);
            self.at(at, Ev::Submit { call: c });
            if self.rng.chance(self.sc.give_up) {
                let after = self.rng.range(100, 3_000);
                self.at(at + after, Ev::GiveUp { call: c });
            }
        }
        for _ in 0..self.sc.crashes {
            let who = honest[self.rng.range(0, honest.len() as u64 - 1) as usize];
            let at = self.rng.range(0, fault_ms.saturating_sub(3_000));
            self.at(at, Ev::Crash { who });
        }
        let k = self.sc.k as usize;
        for _ in 0..self.sc.partitions {
            if k < 2 {
                break;
            }
            let start = self.rng.range(0, fault_ms / 2);
            let end = start + self.rng.range(500, fault_ms / 2);
            // Asymmetric: a random set of directed links.
            for a in 0..k {
                for b in 0..k {
                    if a != b && self.rng.chance(300) {
                        self.blocked.push((a, b, start, end));
                    }
                }
            }
            self.fault("partition");
        }
        if let Some(b) = self.byz {
            self.victims = (0..k).filter(|i| *i != b && self.rng.chance(400)).collect();
            self.at(50, Ev::ByzTick);
            self.at(100, Ev::ByzSubmit);
        }
    }

    fn add_call(&mut self, origin: usize, duration_ms: u64, byzantine_origin: bool) -> usize {
        let id = self.rng.bytes();
        let c = self.calls.len();
        self.calls.push(CallRec {
            id,
            origin,
            duration_ms,
            byzantine_origin,
            failed: false,
            origin_crashed: false,
            decided: None,
        });
        self.by_id.insert(id, c);
        c
    }

    fn faulty_phase(&self) -> bool {
        self.now < self.sc.fault_ms
    }

    // ----- the network ----------------------------------------------------------------------

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        if from == to || self.nodes[to].seq.is_none() && Some(to) != self.byz {
            return;
        }
        if Some(from) == self.byz && self.victims.contains(&to) && self.rng.chance(700) {
            self.fault("byz silence");
            return;
        }
        self.check_wire(&msg);
        if self.faulty_phase() {
            if self
                .blocked
                .iter()
                .any(|(a, b, s, e)| *a == from && *b == to && self.now >= *s && self.now < *e)
            {
                self.fault("partitioned");
                return;
            }
            if self.rng.chance(self.sc.loss) {
                self.fault("loss");
                return;
            }
            if self.sc.drop_requests && matches!(msg, Message::DecisionRequest { .. }) {
                self.fault("request dropped");
                return;
            }
            if self.rng.chance(self.sc.dup) {
                self.fault("duplicate");
                let d = self.rng.range(1, 300);
                self.at(
                    d,
                    Ev::Deliver {
                        from,
                        to,
                        msg: msg.clone(),
                    },
                );
            }
        }
        let delay = if self.faulty_phase() && self.rng.chance(self.sc.reorder) {
            self.fault("delay");
            self.rng.range(100, 1_000)
        } else {
            self.rng.range(1, 30)
        };
        if let Message::Consensus(_) = &msg
            && self.wire.len() < 512
            && self.rng.chance(100)
        {
            self.wire.push(msg.clone());
        }
        self.at(delay, Ev::Deliver { from, to, msg });
    }

    /// Any certificate on the wire that verifies must agree with every other one.
    fn check_wire(&mut self, msg: &Message) {
        if let Message::Decision(d) = msg
            && self.cert_verifies(d)
        {
            self.agree(d.height.0, d.value, "a certificate on the wire");
        }
    }

    fn cert_verifies(&self, d: &Decided) -> bool {
        d.certificate.height == d.height.0
            && d.certificate.value_id == d.value.id()
            && verify_commit_certificate(&self.verifier, &self.committee, &domain(), &d.certificate)
                .is_ok()
    }

    fn agree(&mut self, height: u64, value: Value, source: &str) {
        match self.decided.get(&height) {
            Some(v) if *v != value => {
                self.violation(format!(
                    "two values at height {height} ({source}): {} and {}",
                    v.id(),
                    value.id()
                ));
            }
            Some(_) => {}
            None => {
                self.decided.insert(height, value);
            }
        }
    }

    // ----- members ---------------------------------------------------------------------------

    fn input(&mut self, i: usize, event: Event) {
        let now = self.now;
        let Some(seq) = self.nodes[i].seq.as_mut() else {
            return;
        };
        let actions = seq.handle(event, now);
        self.perform(i, actions);
    }

    fn perform(&mut self, i: usize, actions: Vec<Action>) {
        let honest = Some(i) != self.byz;
        let mut persist_failed = false;
        for action in actions {
            if self.nodes[i].seq.is_none() {
                return;
            }
            match action {
                Action::Persist(Record::Wal(entry)) => {
                    if self.faulty_phase() && honest && self.rng.chance(self.sc.disk) {
                        self.fault("failed write");
                        persist_failed = true;
                        let now = self.now;
                        let stop = self.nodes[i].seq.as_mut().map(|s| {
                            s.handle(
                                Event::PersistFailed {
                                    reason: "disk full".into(),
                                },
                                now,
                            )
                        });
                        let stopped = self.nodes[i]
                            .seq
                            .as_ref()
                            .is_some_and(|s| s.stopped().is_some());
                        drop(stop);
                        if stopped {
                            // The driver ends; the glue restarts it when the disk is back.
                            self.crash(i);
                            let after = self.rng.range(300, 1_500);
                            self.at(after, Ev::Restart { who: i });
                            return;
                        }
                        continue;
                    }
                    self.nodes[i].wal.push(entry);
                }
                Action::Persist(Record::Decision(d)) => {
                    if honest {
                        self.on_honest_decision(i, &d);
                    }
                    let node = &mut self.nodes[i];
                    node.wal.retain(|e| e.height > d.height);
                    node.decisions.insert(d.height.0, d);
                }
                Action::Broadcast { msg } => {
                    if honest {
                        self.check_signed(i, &msg, persist_failed);
                    }
                    for to in 0..self.sc.k as usize {
                        if to != i {
                            self.send(i, to, msg.clone());
                        }
                    }
                }
                Action::Send { to, msg } => {
                    if honest {
                        self.check_signed(i, &msg, persist_failed);
                    }
                    self.send(i, to.0 as usize, msg);
                }
                Action::Execute {
                    height,
                    round,
                    call_id,
                } => {
                    let d = self.duration(&call_id);
                    let inc = self.nodes[i].inc;
                    self.at(
                        d,
                        Ev::ExecDone {
                            to: i,
                            inc,
                            height,
                            round,
                            call_id,
                        },
                    );
                }
                Action::Validate {
                    height,
                    round,
                    value,
                } => {
                    let d = self.duration(&value.call_id);
                    let inc = self.nodes[i].inc;
                    self.at(
                        d,
                        Ev::ValDone {
                            to: i,
                            inc,
                            height,
                            round,
                            value,
                        },
                    );
                }
                Action::Commit(d) => {
                    let node = &mut self.nodes[i];
                    if node.state.len() as u64 == d.height.0 {
                        node.state.push((d.value.call_id, d.value.receipt_id));
                    }
                    let inc = node.inc;
                    self.at(
                        0,
                        Ev::Input {
                            to: i,
                            inc,
                            event: Event::Committed { height: d.height },
                        },
                    );
                }
                Action::Reply { call_id, result } => {
                    if let CallResult::Failed { .. } = result
                        && honest
                    {
                        self.failed.insert(call_id);
                        if let Some(c) = self.by_id.get(&call_id) {
                            self.calls[*c].failed = true;
                        }
                        if let Some(h) = self.decided_calls.get(&call_id) {
                            self.violation(format!("call answered Failed was decided at {h}"));
                        }
                    }
                }
                Action::SetTimer { at_ms, timer } => {
                    let inc = self.nodes[i].inc;
                    let delay = at_ms.saturating_sub(self.now);
                    self.at(
                        delay,
                        Ev::Input {
                            to: i,
                            inc,
                            event: Event::Timer(timer),
                        },
                    );
                }
                Action::SendStoredDecisions {
                    to,
                    from_height,
                    until,
                } => {
                    let ds: Vec<Decided> = self.nodes[i]
                        .decisions
                        .range(from_height.0..until.0)
                        .map(|(_, d)| d.clone())
                        .collect();
                    for d in ds {
                        self.send(i, to.0 as usize, Message::Decision(d));
                    }
                }
                Action::Evidence(e) => {
                    for _ in e {
                        self.fault("evidence reported");
                    }
                }
                Action::Stop(reason) => {
                    if honest && !persist_failed {
                        self.violation(format!("member {i} stopped: {reason}"));
                    }
                }
            }
        }
    }

    /// How long an execution of `call_id` runs: the VM kills it at `MAX_CALL_MS`.
    fn duration(&self, call_id: &CallId) -> u64 {
        self.by_id
            .get(call_id)
            .map_or(1, |c| self.calls[*c].duration_ms)
            .min(MAX_CALL_MS)
    }

    /// The VM killed the execution at `MAX_CALL_MS` (the call needs longer).
    fn killed(&self, call_id: &CallId) -> bool {
        self.by_id
            .get(call_id)
            .is_some_and(|c| self.calls[*c].duration_ms > MAX_CALL_MS)
    }

    /// What an honest member signs: never after a failed persist of the same list, never
    /// twice differently for one (height, round, type).
    fn check_signed(&mut self, i: usize, msg: &Message, persist_failed: bool) {
        let Message::Consensus(m) = msg else {
            return;
        };
        if persist_failed && matches!(m, ConsensusMessage::Vote(_) | ConsensusMessage::Proposal(_))
        {
            self.violation(format!("member {i} sent a vote after a failed persist"));
        }
        if let ConsensusMessage::Vote(v) = m
            && v.message.voter.0 as usize == i
        {
            let key = (
                i,
                v.message.height.0,
                v.message.round.as_u32().unwrap_or(u32::MAX),
                v.message.vote_type,
            );
            match self.votes.get(&key) {
                Some(old) if *old != v.message.value => {
                    self.violation(format!("honest member {i} equivocated at {key:?}"));
                }
                Some(_) => {}
                None => {
                    self.votes.insert(key, v.message.value);
                }
            }
        }
    }

    fn on_honest_decision(&mut self, i: usize, d: &Decided) {
        if !self.cert_verifies(d) {
            self.violation(format!(
                "member {i} stored height {} without a valid certificate",
                d.height
            ));
        }
        self.agree(d.height.0, d.value, "a member's decision");
        let call = d.value.call_id;
        match self.decided_calls.get(&call) {
            Some(h) if *h != d.height.0 => {
                self.violation(format!("call decided twice: heights {h} and {}", d.height));
            }
            Some(_) => {}
            None => {
                self.decided_calls.insert(call, d.height.0);
            }
        }
        if self.failed.contains(&call) {
            self.violation(format!("call answered Failed decided at {}", d.height));
        }
        if let Some(c) = self.by_id.get(&call) {
            self.calls[*c].decided.get_or_insert(d.height.0);
        }
    }

    fn crash(&mut self, who: usize) {
        let node = &mut self.nodes[who];
        node.seq = None;
        node.inc += 1;
        node.cancelled.clear();
        for c in self.calls.iter_mut() {
            if c.origin == who && c.decided.is_none() {
                c.origin_crashed = true;
            }
        }
    }

    // ----- the executor ----------------------------------------------------------------------

    fn exec_done(&mut self, i: usize, height: Height, round: u32, call_id: CallId) {
        let forget = self.sc.planted.forget_decided_calls;
        let node = &self.nodes[i];
        let applied = node.state.len() as u64;
        let prev = node.state.last().map(|s| s.1).unwrap_or_default();
        let failed = |reason: &str| Event::ExecuteFailed {
            height,
            round,
            call_id,
            reason: reason.into(),
            reproducible: false,
        };
        let event = if node.cancelled.contains(&call_id) {
            failed("cancelled: the client gave up")
        } else if !self.by_id.contains_key(&call_id) {
            failed("the leader has not received this call's payload")
        } else if let Some(at) = node.state.iter().position(|s| s.0 == call_id)
            && !forget
        {
            Event::AlreadyCommitted {
                call_id,
                height: Height(at as u64),
                receipt_id: node.state[at].1,
            }
        } else if applied > height.0 {
            Event::Behind { height }
        } else if applied < height.0 {
            failed("the state lags")
        } else if self.killed(&call_id) {
            failed("killed at max_call_ms")
        } else if self.faulty_phase() && self.rng.chance(self.sc.interrupted) {
            self.fault("interrupted execution");
            failed("interrupted: wall-clock timeout")
        } else {
            Event::Executed {
                height,
                round,
                call_id,
                receipt_id: receipt(height.0, &call_id, &prev),
            }
        };
        if self.trace {
            println!(
                "        @{i} -> {}",
                format!("{event:?}").chars().take(120).collect::<String>()
            );
        }
        self.input(i, event);
    }

    fn val_done(&mut self, i: usize, height: Height, round: u32, value: Value) {
        let forget = self.sc.planted.forget_decided_calls;
        // A re-execution killed by the VM is a local failure: not valid here. (Locally
        // interrupted re-executions of calls within the limit are not modelled: the instance
        // keeps one verdict per value and height, see the report on non-reproducible validity.)
        let node = &self.nodes[i];
        let prev = node.state.last().map(|s| s.1).unwrap_or_default();
        let valid = !self.killed(&value.call_id)
            && self.by_id.contains_key(&value.call_id)
            && (forget || !node.state.iter().any(|s| s.0 == value.call_id))
            && node.state.len() as u64 == height.0
            && value.receipt_id == receipt(height.0, &value.call_id, &prev)
            && value.proposer.0 < self.sc.k;
        self.input(
            i,
            Event::Validated {
                height,
                round,
                value,
                valid,
            },
        );
    }

    // ----- the Byzantine member --------------------------------------------------------------

    fn byz_tick(&mut self, b: usize) {
        let k = self.sc.k as usize;
        let Some(seq) = self.nodes[b].seq.as_ref() else {
            return;
        };
        let height = seq.height();
        let signer = (self.signer)(b as u32);
        let round = Round::new(self.rng.range(0, 3) as u32);
        match self.rng.range(0, 5) {
            0 => {
                self.fault("byz equivocating votes");
                let vote_type = if self.rng.chance(500) {
                    VoteType::Prevote
                } else {
                    VoteType::Precommit
                };
                for to in (0..k).filter(|t| *t != b) {
                    let value = if self.rng.chance(300) {
                        NilOrVal::Nil
                    } else {
                        NilOrVal::Val(ValueId(self.rng.bytes()))
                    };
                    let vote = Vote {
                        height,
                        round,
                        vote_type,
                        value,
                        voter: MemberIndex(b as u32),
                    };
                    let sig = signer.sign(&vote_message(&domain(), &vote));
                    let msg = ConsensusMessage::Vote(SignedVote::new(vote, Signature(sig)));
                    self.send(b, to, Message::Consensus(msg));
                }
            }
            1 => {
                self.fault("byz equivocating proposals");
                for to in (0..k).filter(|t| *t != b) {
                    // A real call with its right receipt (valid!) or garbage.
                    let call_id = if !self.calls.is_empty() && self.rng.chance(500) {
                        let c = self.rng.range(0, self.calls.len() as u64 - 1) as usize;
                        self.calls[c].id
                    } else {
                        self.rng.bytes()
                    };
                    let prev = self.nodes[b].state.last().map(|s| s.1).unwrap_or_default();
                    let value = Value {
                        call_id,
                        receipt_id: receipt(height.0, &call_id, &prev),
                        proposer: MemberIndex(b as u32),
                    };
                    let proposal = Proposal {
                        height,
                        round,
                        value,
                        pol_round: Round::Nil,
                        proposer: MemberIndex(b as u32),
                    };
                    let sig = signer.sign(&proposal_message(&domain(), &proposal));
                    let msg =
                        ConsensusMessage::Proposal(SignedProposal::new(proposal, Signature(sig)));
                    self.send(b, to, Message::Consensus(msg));
                }
            }
            2 => {
                self.fault("byz forged decisions");
                let h = Height(height.0.saturating_sub(self.rng.range(0, 1)));
                let value = Value {
                    call_id: self.rng.bytes(),
                    receipt_id: self.rng.bytes(),
                    proposer: MemberIndex(b as u32),
                };
                let bytes = vote_bytes(
                    &domain(),
                    h,
                    Round::new(0),
                    VoteType::Precommit,
                    &NilOrVal::Val(value.id()),
                );
                let mut signers = vec![0u8; k.div_ceil(8)];
                for m in 0..k {
                    signers[m / 8] |= 1 << (m % 8);
                }
                let certificate = AggregateCertificate {
                    height: h.0,
                    round: 0,
                    value_id: value.id(),
                    signers,
                    signature: signer.sign(&bytes),
                };
                let d = Decided {
                    height: h,
                    value,
                    certificate,
                };
                for to in (0..k).filter(|t| *t != b) {
                    self.send(b, to, Message::Decision(d.clone()));
                }
            }
            3 => {
                if !self.wire.is_empty() {
                    self.fault("byz replay");
                    let m =
                        self.wire[self.rng.range(0, self.wire.len() as u64 - 1) as usize].clone();
                    let to = self.rng.range(0, k as u64 - 1) as usize;
                    self.send(b, to, m);
                }
            }
            _ => {
                self.fault("byz forward flood");
                // Made-up ids (the glue drops them: no payload) and decided calls (exactly
                // once). Not undecided calls of others: the glue would need their payload,
                // which a member only has if it was sent the call.
                let mut call_ids = (0..48).map(|_| self.rng.bytes()).collect::<Vec<_>>();
                call_ids.extend(self.decided_calls.keys().take(16).copied());
                for to in (0..k).filter(|t| *t != b) {
                    self.send(
                        b,
                        to,
                        Message::Forward {
                            call_ids: call_ids.clone(),
                        },
                    );
                }
            }
        }
    }

    // ----- running ---------------------------------------------------------------------------

    fn step(&mut self) -> bool {
        let Some(Reverse((at, id))) = self.queue.pop() else {
            return false;
        };
        let Some(ev) = self.evs.remove(&id) else {
            return true;
        };
        self.now = at;
        self.steps += 1;
        if self.trace {
            println!("{:>7} {}", self.now, brief(&ev));
        }
        match ev {
            Ev::Deliver { from, to, mut msg } => {
                // The glue forwards a call with its payload and drops ids it has none for
                // (committees.rs checks the attachment): unknown ids never reach the member.
                if let Message::Forward { call_ids } = &mut msg {
                    call_ids.retain(|id| self.by_id.contains_key(id));
                }
                self.input(
                    to,
                    Event::Message {
                        from: MemberIndex(from as u32),
                        msg,
                    },
                );
            }
            Ev::Input { to, inc, event } => {
                if self.nodes[to].inc == inc {
                    self.input(to, event);
                }
            }
            Ev::ExecDone {
                to,
                inc,
                height,
                round,
                call_id,
            } => {
                if self.nodes[to].inc == inc {
                    self.exec_done(to, height, round, call_id);
                }
            }
            Ev::ValDone {
                to,
                inc,
                height,
                round,
                value,
            } => {
                if self.nodes[to].inc == inc {
                    self.val_done(to, height, round, value);
                }
            }
            Ev::Submit { call } => {
                let (origin, id) = (self.calls[call].origin, self.calls[call].id);
                if self.nodes[origin].seq.is_none() {
                    // The client found the member down: it is not submitted.
                    self.calls[call].origin_crashed = true;
                } else if self.nodes[origin].state.iter().any(|s| s.0 == id) {
                    // The glue answers a committed call from its store (committees.rs).
                } else {
                    self.input(origin, Event::Submit { call_id: id });
                }
            }
            Ev::GiveUp { call } => {
                self.fault("client gave up");
                let (origin, id) = (self.calls[call].origin, self.calls[call].id);
                self.nodes[origin].cancelled.insert(id);
            }
            Ev::Crash { who } => {
                if self.nodes[who].seq.is_some() {
                    self.fault("crash");
                    self.crash(who);
                    let after = self.rng.range(200, 3_000);
                    self.at(after, Ev::Restart { who });
                }
            }
            Ev::Restart { who } => {
                if self.nodes[who].seq.is_none() {
                    self.boot(who);
                }
            }
            Ev::ByzTick => {
                if let Some(b) = self.byz
                    && self.sc.byz_noise
                {
                    self.byz_tick(b);
                    let d = self.rng.range(50, 300);
                    self.at(d, Ev::ByzTick);
                }
            }
            Ev::ByzSubmit => {
                if let Some(b) = self.byz {
                    // The Byzantine member's own clients: decided heights it can lead with. A
                    // censor keeps exactly one call of its own ready (more would be overload,
                    // which no bound survives, not censorship).
                    let own_pending = self
                        .calls
                        .iter()
                        .filter(|c| c.byzantine_origin && c.decided.is_none())
                        .count();
                    if !self.sc.censor || own_pending == 0 {
                        let c = self.add_call(b, 5, true);
                        let id = self.calls[c].id;
                        self.input(b, Event::Submit { call_id: id });
                    }
                    // A censor keeps it up to the deadline (otherwise its round 0 fails for
                    // want of a value once it stops, and the next member takes the lead).
                    let until = if self.sc.censor {
                        self.sc.fault_ms + self.sc.settle_ms
                    } else {
                        self.sc.fault_ms + self.sc.settle_ms / 2
                    };
                    if self.now < until {
                        // A censor always has a call of its own to propose.
                        let d = if self.sc.censor {
                            self.rng.range(10, 40)
                        } else {
                            self.rng.range(200, 700)
                        };
                        self.at(d, Ev::ByzSubmit);
                    }
                }
            }
        }
        true
    }

    fn run(&mut self) {
        let deadline = self.sc.fault_ms + self.sc.settle_ms;
        while self
            .queue
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= deadline)
        {
            if !self.step() {
                break;
            }
            if self.violations.len() > 20 {
                return;
            }
            // Past the faults, once every call is settled and nobody is behind, only the
            // Byzantine noise is left: stop early.
            if self.steps.is_multiple_of(512) && self.now > self.sc.fault_ms && self.settled() {
                break;
            }
        }
        self.now = self.now.max(self.sc.fault_ms);
        self.final_checks();
    }

    fn settled(&self) -> bool {
        let top = self.decided.keys().next_back().map_or(0, |h| h + 1);
        self.calls
            .iter()
            .all(|c| c.byzantine_origin || c.failed || c.origin_crashed || c.decided.is_some())
            && self.honest().iter().all(|i| {
                self.nodes[*i]
                    .seq
                    .as_ref()
                    .is_some_and(|s| s.height().0 >= top && s.known() <= s.height())
            })
    }

    fn final_checks(&mut self) {
        let mut late = Vec::new();
        for (n, c) in self.calls.iter().enumerate() {
            if c.byzantine_origin || c.failed || c.origin_crashed || c.decided.is_some() {
                continue;
            }
            let holders: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].seq.as_ref().is_some_and(|s| s.holds(&c.id)))
                .collect();
            let heights: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| n.seq.as_ref().map_or(u64::MAX, |s| s.height().0))
                .collect();
            if self.trace {
                for (i, node) in self.nodes.iter().enumerate() {
                    if let Some(seq) = node.seq.as_ref() {
                        println!("  member {i}: {}", seq.describe(&c.id));
                    }
                }
            }
            late.push(format!(
                "call {n} submitted at member {} was neither decided nor Failed by the deadline \
                 (held by {holders:?}, heights {heights:?})",
                c.origin
            ));
        }
        for v in late {
            self.violation(v);
        }
        let top = self.decided.keys().next_back().map_or(0, |h| h + 1);
        for i in self.honest() {
            let Some(seq) = self.nodes[i].seq.as_ref() else {
                continue;
            };
            let (h, known) = (seq.height().0, seq.known().0);
            if known > h {
                self.violation(format!(
                    "member {i} knows of height {known} but is stuck at {h} (top {top})"
                ));
            }
        }
    }
}

fn brief(ev: &Ev) -> String {
    match ev {
        Ev::Deliver { from, to, msg } => format!("{from}->{to} {}", brief_msg(msg)),
        Ev::Input { to, event, .. } => format!("@{to} {event:?}").chars().take(160).collect(),
        Ev::ExecDone {
            to, height, round, ..
        } => format!("@{to} execution done h{height} r{round}"),
        Ev::ValDone {
            to, height, round, ..
        } => format!("@{to} validation done h{height} r{round}"),
        other => format!("{other:?}"),
    }
}

fn brief_msg(m: &Message) -> String {
    match m {
        Message::Consensus(ConsensusMessage::Vote(v)) => format!(
            "{:?} h{} r{:?} {:?} by {}",
            v.message.vote_type,
            v.message.height,
            v.message.round.as_u32(),
            v.message.value.as_ref().map(|id| id.to_string()),
            v.message.voter
        ),
        Message::Consensus(ConsensusMessage::Proposal(p)) => format!(
            "Proposal h{} r{:?} {} by {}",
            p.message.height,
            p.message.round.as_u32(),
            p.message.value.id(),
            p.message.proposer
        ),
        Message::Consensus(_) => "certificate".into(),
        Message::Forward { call_ids } => format!("Forward {} calls", call_ids.len()),
        Message::DecisionRequest { from_height } => format!("DecisionRequest from {from_height}"),
        Message::Decision(d) => format!("Decision h{} {}", d.height, d.value.id()),
    }
}

use super::instance::Message as ConsensusMessage;

// ---------------------------------------------------------------------------------------------
// Runs

struct Outcome {
    seeds: u64,
    steps: u64,
    faults: BTreeMap<&'static str, u64>,
    /// (seed, violations)
    failures: Vec<(u64, Vec<String>)>,
}

fn run_seed(seed: u64, scenario: impl Fn(&mut Rng) -> Scenario, trace: bool) -> Sim<Mac> {
    let mut rng = Rng(seed);
    let sc = scenario(&mut rng);
    let k = sc.k;
    if trace {
        println!("seed {seed}: {sc:?}");
    }
    let mut sim = Sim::new(seed, sc, Box::new(mac_keys(k)), trace);
    sim.run();
    sim
}

fn run_seeds(seeds: &[u64], scenario: impl Fn(&mut Rng) -> Scenario + Copy) -> Outcome {
    let trace = seeds.len() == 1 && std::env::var("TM_SIM_SEED").is_ok();
    run_seeds_traced(seeds, scenario, trace)
}

fn run_seeds_traced(
    seeds: &[u64],
    scenario: impl Fn(&mut Rng) -> Scenario + Copy,
    trace: bool,
) -> Outcome {
    let mut out = Outcome {
        seeds: 0,
        steps: 0,
        faults: BTreeMap::new(),
        failures: Vec::new(),
    };
    for &seed in seeds {
        let sim = run_seed(seed, scenario, trace);
        out.seeds += 1;
        out.steps += sim.steps;
        for (k, v) in &sim.faults {
            *out.faults.entry(k).or_default() += v;
        }
        if !sim.violations.is_empty() {
            out.failures.push((seed, sim.violations.clone()));
        }
    }
    out
}

/// `TM_SIM_SEED` alone when set, else `TM_SIM_SEEDS` (default `default`) seeds from `base`.
fn seeds(base: u64, default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("TM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("TM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).map(|i| base + i).collect()
}

fn summary(name: &str, o: &Outcome, started: std::time::Instant) -> String {
    let faults: Vec<String> = o.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let violations: usize = o.failures.iter().map(|f| f.1.len()).sum();
    format!(
        "{name}: seeds={} steps={} faults[{}] violations={violations} ({:.1} s)",
        o.seeds,
        o.steps,
        faults.join(", "),
        started.elapsed().as_secs_f64()
    )
}

#[test]
fn random_committees_keep_every_invariant() {
    let started = std::time::Instant::now();
    let seeds = seeds(1, 200);
    let o = run_seeds(&seeds, Scenario::random);
    println!("{}", summary("tm-sim", &o, started));
    for (seed, v) in o.failures.iter().take(20) {
        println!("seed {seed} (replay: TM_SIM_SEED={seed}): {v:?}");
    }
    assert!(o.failures.is_empty(), "{} seeds failed", o.failures.len());
}

/// Seeds 7027 and 9410 of the first 20,000 once ended with calls undecided at the deadline
/// (no safety invariant failed): a Byzantine leader flooded its round with proposals, so the
/// core kept two of its values and dropped its re-proposal of the honest value V (its cap of
/// distinct values per height and round); the instance had asked for V's re-execution anyway
/// and counted it answered, though the core dropped that verdict too, so when honest leaders
/// re-proposed V, a member that had not re-executed V before (it had restarted) never asked
/// again and prevoted nil in every round. The instance now asks only about proposals the core
/// keeps (`tests.rs` has the same case, step by step). Replay one with its trace:
/// `TM_SIM_SEED=9410 cargo test -p onvm-node --lib tendermint::sim::random -- --nocapture`.
#[test]
fn seeds_that_once_stalled_now_decide() {
    let o = run_seeds(&[7027, 9410], Scenario::random);
    for (seed, v) in &o.failures {
        println!("seed {seed}: {v:?}");
    }
    assert!(o.failures.is_empty(), "{} seeds failed", o.failures.len());
}

#[test]
fn every_committee_size_decides_in_a_quiet_network_and_goes_idle() {
    for k in [1, 2, 3, 4, 7] {
        let mut sim = Sim::new(k as u64, Scenario::quiet(k), Box::new(mac_keys(k)), false);
        sim.run();
        assert!(sim.violations.is_empty(), "k={k}: {:?}", sim.violations);
        assert!(sim.calls.iter().all(|c| c.decided.is_some()), "k={k}");
        // Idle programs cost nothing: no timer armed once every call is decided.
        for (i, n) in sim.nodes.iter().enumerate() {
            let seq = n
                .seq
                .as_ref()
                .unwrap_or_else(|| unreachable!("nobody crashed"));
            assert!(seq.is_idle(), "k={k}: member {i} still has timers");
        }
    }
}

#[test]
fn real_bls_signatures_in_a_few_seeds() {
    use super::tests::Keys;
    for seed in 0..3u64 {
        let mut rng = Rng(seed);
        let mut sc = Scenario::random(&mut rng);
        sc.k = 4;
        sc.calls = 3;
        let keys = Keys::new(4);
        let mut sim = Sim::new(seed, sc, Box::new(move |i| keys.signer(i)), false);
        sim.run();
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:?}",
            sim.violations
        );
    }
}

/// Runs `scenario` over seeds until one violates an invariant; returns it (printed).
fn find_catching_seed(
    name: &str,
    scenario: impl Fn(&mut Rng) -> Scenario + Copy,
    max: u64,
) -> Option<(u64, Vec<String>)> {
    let trace = std::env::var("TM_SIM_TRACE_PLANTED").is_ok();
    for seed in 1..=max {
        let sim = run_seed(seed, scenario, trace);
        if !sim.violations.is_empty() {
            println!(
                "planted {name}: caught by seed {seed} (replay: TM_SIM_SEED={seed}): {}",
                sim.violations[0]
            );
            return Some((seed, sim.violations));
        }
    }
    println!("planted {name}: NOT caught in {max} seeds");
    None
}

fn with_bug(mut sc: Scenario, f: impl Fn(&mut PlantedBugs)) -> Scenario {
    f(&mut sc.planted);
    sc
}

#[test]
fn planted_failed_for_an_exposed_call_is_caught() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::random(rng);
        sc.k = 4;
        sc.interrupted = 250;
        sc.byzantine = false;
        with_bug(sc, |p| p.fail_exposed_calls = true)
    };
    assert!(find_catching_seed("fail_exposed_calls", scenario, 200).is_some());
    // The same scenarios without the bug pass.
    let clean = |rng: &mut Rng| {
        let mut sc = scenario(rng);
        sc.planted = PlantedBugs::default();
        sc
    };
    let o = run_seeds(&(1..=20).collect::<Vec<_>>(), clean);
    assert!(o.failures.is_empty(), "{:?}", o.failures);
}

#[test]
fn planted_forgotten_decided_calls_are_caught() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::random(rng);
        sc.k = 4;
        sc.dup = 300;
        sc.reorder = 300;
        with_bug(sc, |p| p.forget_decided_calls = true)
    };
    assert!(find_catching_seed("forget_decided_calls", scenario, 200).is_some());
}

/// A laggard that is idle (no call of its own, none forwarded to it) sends nothing about its
/// height, so nobody pushes it the decisions it lacks: only its own repeated requests end the
/// catch-up. The network drops every request while the faults last; crashes make laggards.
/// Since calls are forwarded to every member, a laggard is idle only when it restarts after
/// the last call was forwarded, so few seeds catch the bug (seed 1241 is the first).
#[test]
fn planted_single_catch_up_request_is_caught() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::random(rng);
        sc.k = 4;
        sc.byzantine = false;
        sc.crashes = 2;
        sc.drop_requests = true;
        // Long faults: the last heights are decided while requests are still dropped.
        sc.fault_ms = 30_000;
        sc.settle_ms = 30_000;
        with_bug(sc, |p| p.request_decisions_once = true)
    };
    assert!(find_catching_seed("request_decisions_once", scenario, 2000).is_some());
    let clean = |rng: &mut Rng| {
        let mut sc = scenario(rng);
        sc.planted = PlantedBugs::default();
        sc
    };
    let o = run_seeds(&(1..=20).collect::<Vec<_>>(), clean);
    assert!(o.failures.is_empty(), "{:?}", o.failures);
}

/// A program whose timeouts were not sized from its call limit still decides slow calls.
/// (This was the planted `no_hold_for_slow_calls` test. Without the hold it still decides: a
/// member keeps one verdict per value and height, and a leader keeps its execution for the
/// height, so a verdict that came after the round's timeout is used when the same leader
/// proposes the same value again, `k` rounds later. The hold saves those rounds; no invariant
/// depends on it, so there is no planted bug to catch.)
#[test]
fn undersized_timeouts_still_decide_slow_calls() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::quiet(4);
        let _ = rng.next();
        sc.slow = 1000;
        // Every re-execution outlasts the timeouts' cap (0.7 s).
        sc.undersized = true;
        sc.slow_ms = (800, MAX_CALL_MS);
        sc.calls = 3;
        sc.settle_ms = 40_000;
        sc
    };
    let o = run_seeds(&(1..=5).collect::<Vec<_>>(), scenario);
    assert!(o.failures.is_empty(), "{:?}", o.failures);
}

#[test]
fn planted_swallowed_persist_failure_is_caught() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::random(rng);
        sc.disk = 200;
        with_bug(sc, |p| p.swallow_persist_failure = true)
    };
    assert!(find_catching_seed("swallow_persist_failure", scenario, 100).is_some());
}

#[test]
fn planted_sticky_leader_is_caught() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::quiet(4);
        let _ = rng.next();
        sc.byzantine = true;
        // The censor leads height 0, so a sticky lead stays with it for good.
        sc.byz_at = Some(0);
        // A pure censor: its own round 0 never fails, so only rotation takes the lead.
        sc.byz_noise = false;
        sc.censor = true;
        sc.settle_ms = 30_000;
        with_bug(sc, |p| p.sticky_leader = true)
    };
    assert!(find_catching_seed("sticky_leader", scenario, 40).is_some());
    let clean = |rng: &mut Rng| {
        let mut sc = scenario(rng);
        sc.planted = PlantedBugs::default();
        sc
    };
    let o = run_seeds(&(1..=20).collect::<Vec<_>>(), clean);
    assert!(o.failures.is_empty(), "{:?}", o.failures);
}

#[test]
fn planted_trusted_decisions_are_caught() {
    let scenario = |rng: &mut Rng| {
        let mut sc = Scenario::random(rng);
        sc.k = 4;
        sc.byzantine = true;
        with_bug(sc, |p| p.trust_decisions = true)
    };
    assert!(find_catching_seed("trust_decisions", scenario, 50).is_some());
}
