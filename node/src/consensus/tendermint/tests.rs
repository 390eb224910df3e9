//! Deterministic simulations of a committee: members exchange messages through an in-memory
//! queue with seeded random delays (so reordered), timers run on a virtual clock, and the
//! node's executor is a pure function of the height. Signatures are the node's real BLS signing (identity.rs).
//!
//! Every randomized test prints its seed; `TM_SEED=<n>` replays one seed.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::rc::Rc;

use std::sync::Arc;

use malachitebft_core_consensus::Input;
use onvm_rpc_api::committee::Member;
use onvm_rpc_api::{Hash32, HexBytes};

use super::keys::{CommitteeKeys, MemberKeys};
use super::*;
use crate::identity::Identity;

// ---------------------------------------------------------------------------------------------
// Keys: the node's own signing (identity.rs, BLS min_sig with proofs of possession), from keys
// derived from the member index so a seed replays byte for byte.

pub(super) struct Keys {
    committee: CommitteeKeys,
    ids: Vec<Arc<Identity>>,
}

impl Keys {
    pub(super) fn new(k: u32) -> Rc<Keys> {
        let ids: Vec<Arc<Identity>> = (0..k)
            .map(|i| Arc::new(Identity::for_tests(u64::from(i))))
            .collect();
        let members: Vec<Member> = ids
            .iter()
            .map(|id| Member {
                endpoint_id: Hash32(*id.endpoint_id().as_bytes()),
                bls_public_key: HexBytes(id.bls_public_key().to_vec()),
                proof_of_possession: HexBytes(id.bls_proof_of_possession().to_vec()),
            })
            .collect();
        let committee = CommitteeKeys::new(&members).expect("test keys verify");
        Rc::new(Keys { committee, ids })
    }

    pub(super) fn signer(self: &Rc<Self>, me: u32) -> Bls {
        MemberKeys::new(self.committee.clone(), self.ids[me as usize].clone())
    }
}

/// The production signer.
pub(super) type Bls = MemberKeys;

// ---------------------------------------------------------------------------------------------
// Helpers

use super::sim::Rng;

/// Seeds to run: `TM_SEED` alone when set, else `count` seeds derived from `base`.
fn seeds(base: u64, count: u64) -> Vec<u64> {
    match std::env::var("TM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (0..count).map(|i| base * 1000 + i).collect(),
    }
}

fn domain() -> Domain {
    Domain {
        network: "onvm-test".into(),
        program: [7; 32],
    }
}

fn h32(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// The program: the call at height h and the receipt every correct execution of it gives.
fn call_at(h: Height) -> [u8; 32] {
    h32(&[b"call", &h.0.to_be_bytes()])
}
fn receipt_at(h: Height) -> [u8; 32] {
    h32(&[b"receipt", &h.0.to_be_bytes()])
}
/// A second call that is just as valid at h (the Byzantine member's other proposal).
fn alt_call_at(h: Height) -> [u8; 32] {
    h32(&[b"alt-call", &h.0.to_be_bytes()])
}
fn alt_receipt_at(h: Height) -> [u8; 32] {
    h32(&[b"alt-receipt", &h.0.to_be_bytes()])
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig {
        propose_ms: 300,
        propose_delta_ms: 100,
        prevote_ms: 100,
        prevote_delta_ms: 50,
        precommit_ms: 100,
        precommit_delta_ms: 50,
        rebroadcast_ms: 600,
        max_ms: 5_000,
    }
}

fn config(k: u32, me: u32) -> Config {
    Config {
        domain: domain(),
        k,
        me: MemberIndex(me),
        timeouts: timeouts(),
    }
}

fn sign_vote(keys: &Rc<Keys>, vote: Vote) -> SignedVote {
    let sig = keys
        .signer(vote.voter.0)
        .sign(&vote_message(&domain(), &vote));
    SignedVote::new(vote, Signature(sig))
}

fn sign_proposal(keys: &Rc<Keys>, proposal: Proposal) -> SignedProposal {
    let sig = keys
        .signer(proposal.proposer.0)
        .sign(&proposal_message(&domain(), &proposal));
    SignedProposal::new(proposal, Signature(sig))
}

// ---------------------------------------------------------------------------------------------
// The simulator

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    /// A member's stored decision, sent to a member that spoke about that height.
    Catchup {
        to: usize,
        height: Height,
        value: Value,
        cert: AggregateCertificate,
    },
    Timer {
        to: usize,
        key: (Height, u32, TimeoutKind),
        generation: u64,
    },
    Executed {
        to: usize,
        height: Height,
        round: u32,
        incarnation: u64,
    },
    Validated {
        to: usize,
        height: Height,
        value: Value,
        incarnation: u64,
    },
    Crash {
        who: usize,
    },
    Restart {
        who: usize,
    },
    ByzantineTick,
}

struct Node {
    instance: Option<Instance<Bls>>,
    /// What survives a crash: the log of the current height, and where the member stood.
    wal: Vec<WalEntry>,
    durable_height: Height,
    durable_first: MemberIndex,
    timers: HashMap<(Height, u32, TimeoutKind), u64>,
    /// Bumped at every restart: answers of executions begun before a crash are lost.
    incarnation: u64,
    /// This member's executor computes wrong receipts at these heights.
    faulty_exec: BTreeSet<u64>,
    /// Durable decisions (the receipts with their aggregate certificates).
    store: BTreeMap<u64, (Value, AggregateCertificate)>,
    /// When this member last sent its decision of a height to another: (to, height) -> time.
    helped: HashMap<(usize, u64), u64>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    generation: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    payloads: HashMap<u64, Event>,
    keys: Rc<Keys>,
    k: u32,
    nodes: Vec<Node>,
    /// Members that never run an instance (dead or scripted Byzantine).
    byzantine: Option<usize>,
    /// Alternative values are valid too (so a Byzantine leader's two proposals both pass).
    accept_alt: bool,
    /// Stop starting heights after this one.
    last_height: u64,
    /// Decisions by height, by member.
    decisions: BTreeMap<u64, BTreeMap<usize, (Value, u32)>>,
    /// Every vote any honest member broadcast: (voter, height, round, type) -> value.
    ledger: HashMap<(u32, u64, u32, VoteType), NilOrVal<ValueId>>,
    evidence: Vec<(usize, Misbehavior)>,
    /// Planted bug: restarted members forget their log.
    amnesia: bool,
    log: bool,
}

impl Sim {
    fn new(seed: u64, k: u32, first: MemberIndex, last_height: u64) -> Sim {
        let keys = Keys::new(k);
        let nodes = (0..k)
            .map(|i| Node {
                instance: Some(
                    Instance::new(config(k, i), keys.signer(i)).expect("a valid configuration"),
                ),
                wal: Vec::new(),
                durable_height: Height(0),
                durable_first: first,
                timers: HashMap::new(),
                incarnation: 0,
                faulty_exec: BTreeSet::new(),
                store: BTreeMap::new(),
                helped: HashMap::new(),
            })
            .collect();
        Sim {
            seed,
            rng: Rng(seed),
            now: 0,
            seq: 0,
            generation: 0,
            events: BinaryHeap::new(),
            payloads: HashMap::new(),
            keys,
            k,
            nodes,
            byzantine: None,
            accept_alt: false,
            last_height,
            decisions: BTreeMap::new(),
            ledger: HashMap::new(),
            evidence: Vec::new(),
            amnesia: false,
            log: std::env::var("TM_LOG").is_ok(),
        }
    }

    fn committee(&self) -> Committee {
        Committee::new(self.k).expect("k > 0")
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((self.now + delay, self.seq)));
        self.payloads.insert(self.seq, event);
    }

    fn kill(&mut self, who: usize) {
        self.nodes[who].instance = None;
        self.nodes[who].timers.clear();
    }

    fn start(&mut self) {
        for i in 0..self.nodes.len() {
            let first = self.nodes[i].durable_first;
            if let Some(inst) = self.nodes[i].instance.as_mut() {
                let actions = inst.start_height(Height(0), first);
                self.apply(i, actions);
            }
        }
    }

    fn valid(&self, height: Height, value: &Value) -> bool {
        let normal = value.call_id == call_at(height) && value.receipt_id == receipt_at(height);
        let alt =
            value.call_id == alt_call_at(height) && value.receipt_id == alt_receipt_at(height);
        value.proposer.0 < self.k && (normal || (self.accept_alt && alt))
    }

    /// Performs `actions` of member `i`, in order.
    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            if self.log {
                eprintln!("t={} m{i}: {action:?}", self.now);
            }
            match action {
                Action::WalAppend(entry) => {
                    // What the node writes is the encoding: check it brings back the entry.
                    let bytes = entry.encode();
                    let back = WalEntry::decode(&bytes).expect("a WAL entry decodes");
                    assert_eq!(back, entry, "WAL codec round trip");
                    self.nodes[i].wal.push(back);
                }
                Action::Broadcast(msg) => {
                    let bytes = msg.encode();
                    let msg = Message::decode(&bytes).expect("a message decodes");
                    if let Message::Vote(v) = &msg {
                        let m = &v.message;
                        let key = (
                            m.voter.0,
                            m.height.0,
                            m.round.as_u32().unwrap_or(0),
                            m.vote_type,
                        );
                        if let Some(prev) = self.ledger.insert(key, m.value) {
                            assert_eq!(
                                prev, m.value,
                                "seed {}: honest m{i} signed two different votes for {key:?}",
                                self.seed
                            );
                        }
                    }
                    for j in 0..self.nodes.len() {
                        if j != i {
                            let delay = self.rng.range(1, 25);
                            self.at(
                                delay,
                                Event::Deliver {
                                    from: i,
                                    to: j,
                                    msg: msg.clone(),
                                },
                            );
                        }
                    }
                }
                Action::ScheduleTimeout {
                    height,
                    round,
                    kind,
                    after_ms,
                } => {
                    self.generation += 1;
                    let key = (height, round, kind);
                    self.nodes[i].timers.insert(key, self.generation);
                    let generation = self.generation;
                    self.at(
                        after_ms,
                        Event::Timer {
                            to: i,
                            key,
                            generation,
                        },
                    );
                }
                Action::CancelTimeout {
                    height,
                    round,
                    kind,
                } => {
                    self.nodes[i].timers.remove(&(height, round, kind));
                }
                Action::CancelAllTimeouts => self.nodes[i].timers.clear(),
                Action::GetValue { height, round } => {
                    let delay = self.rng.range(5, 40);
                    let incarnation = self.nodes[i].incarnation;
                    self.at(
                        delay,
                        Event::Executed {
                            to: i,
                            height,
                            round,
                            incarnation,
                        },
                    );
                }
                Action::Validate { height, value, .. } => {
                    let delay = self.rng.range(5, 40);
                    let incarnation = self.nodes[i].incarnation;
                    self.at(
                        delay,
                        Event::Validated {
                            to: i,
                            height,
                            value,
                            incarnation,
                        },
                    );
                }
                Action::Decide {
                    height,
                    value,
                    certificate,
                } => self.decide(i, height, value, certificate),
                Action::Evidence(evidence) => {
                    for e in evidence {
                        self.evidence.push((i, e));
                    }
                }
                Action::Halt(reason) => panic!("seed {}: m{i} halted: {reason}", self.seed),
            }
        }
    }

    fn decide(&mut self, i: usize, height: Height, value: Value, agg: AggregateCertificate) {
        let committee = self.committee();
        let verifier = self.keys.signer(0);
        verify_commit_certificate(&verifier, &committee, &domain(), &agg)
            .unwrap_or_else(|e| panic!("seed {}: m{i}'s certificate: {e}", self.seed));
        assert_eq!(agg.value_id, value.id());
        assert!(
            self.valid(height, &value),
            "seed {}: an invalid value was decided",
            self.seed
        );

        let round = agg.round;
        let at_height = self.decisions.entry(height.0).or_default();
        if let Some((v, _)) = at_height.values().next() {
            assert_eq!(
                *v, value,
                "seed {}: two decisions at height {height}",
                self.seed
            );
        }
        at_height.insert(i, (value, round));

        // Durable: the decision, then the next height's start (the log restarts empty).
        let node = &mut self.nodes[i];
        node.store.insert(height.0, (value, agg));
        let next = Height(height.0 + 1);
        node.durable_height = next;
        node.durable_first = value.proposer;
        node.wal.retain(|e| e.height >= next);
        if let (true, Some(inst)) = (next.0 <= self.last_height, node.instance.as_mut()) {
            let actions = inst.start_height(next, value.proposer);
            self.apply(i, actions);
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((time, seq))) = self.events.pop() else {
            return false;
        };
        self.now = time;
        let Some(event) = self.payloads.remove(&seq) else {
            return true;
        };
        match event {
            Event::Deliver { from, to, msg } => {
                let now = self.now;
                let node = &mut self.nodes[to];
                if node.instance.is_none() {
                    return true;
                }
                let h = msg.height();
                // The sender speaks about a height this member decided: hand it the decision
                // (at most every 100 ms).
                let recent = node.helped.get(&(from, h.0)).is_some_and(|t| now < t + 100);
                if let (Some((value, cert)), false) = (node.store.get(&h.0).cloned(), recent) {
                    node.helped.insert((from, h.0), now);
                    let delay = self.rng.range(1, 25);
                    self.at(
                        delay,
                        Event::Catchup {
                            to: from,
                            height: h,
                            value,
                            cert,
                        },
                    );
                }
                let Some(inst) = self.nodes[to].instance.as_mut() else {
                    return true;
                };
                let actions = inst.on_message(msg);
                self.apply(to, actions);
            }
            Event::Catchup {
                to,
                height,
                value,
                cert,
            } => {
                if let Some(inst) = self.nodes[to].instance.as_mut() {
                    let actions = inst
                        .on_decision(height, value, &cert)
                        .unwrap_or_else(|e| panic!("seed {}: a stored decision: {e}", self.seed));
                    self.apply(to, actions);
                }
            }
            Event::Timer {
                to,
                key,
                generation,
            } => {
                if self.nodes[to].timers.get(&key) == Some(&generation) {
                    self.nodes[to].timers.remove(&key);
                    if let Some(inst) = self.nodes[to].instance.as_mut() {
                        let actions = inst.on_timeout(key.0, key.1, key.2);
                        self.apply(to, actions);
                    }
                }
            }
            Event::Executed {
                to,
                height,
                round,
                incarnation,
            } => {
                let node = &mut self.nodes[to];
                if node.incarnation == incarnation {
                    let receipt = if node.faulty_exec.contains(&height.0) {
                        h32(&[b"wrong", &height.0.to_be_bytes()])
                    } else {
                        receipt_at(height)
                    };
                    if let Some(inst) = node.instance.as_mut() {
                        let actions = inst.propose(height, round, call_at(height), receipt);
                        self.apply(to, actions);
                    }
                }
            }
            Event::Validated {
                to,
                height,
                value,
                incarnation,
            } => {
                let valid = self.valid(height, &value);
                let node = &mut self.nodes[to];
                if let (true, Some(inst)) =
                    (node.incarnation == incarnation, node.instance.as_mut())
                {
                    let actions = inst.on_value_validated(height, value, valid);
                    self.apply(to, actions);
                }
            }
            Event::Crash { who } => self.kill(who),
            Event::Restart { who } => {
                let node = &mut self.nodes[who];
                node.incarnation += 1;
                let mut inst =
                    Instance::new(config(self.k, who as u32), self.keys.signer(who as u32))
                        .expect("a valid configuration");
                let wal = if self.amnesia { &[][..] } else { &node.wal[..] };
                let actions = inst.recover(node.durable_height, node.durable_first, wal);
                node.instance = Some(inst);
                self.apply(who, actions);
            }
            Event::ByzantineTick => self.byzantine_tick(),
        }
        true
    }

    /// The scripted Byzantine member: at the height most honest members are at, it proposes
    /// two different (both valid) values to different members whenever it leads, and prevotes
    /// and precommits both, each to a different part of the committee; member 0 gets both, so
    /// it holds proof.
    fn byzantine_tick(&mut self) {
        let Some(b) = self.byzantine else { return };
        let Some(height) = self
            .nodes
            .iter()
            .filter_map(|n| n.instance.as_ref().map(|i| i.height()))
            .max()
        else {
            return;
        };
        let me = MemberIndex(b as u32);
        let first = self.nodes[(b + 1) % self.nodes.len()].durable_first;
        let committee = self.committee().with_first(first);
        let a = Value {
            call_id: call_at(height),
            receipt_id: receipt_at(height),
            proposer: me,
        };
        let alt = Value {
            call_id: alt_call_at(height),
            receipt_id: alt_receipt_at(height),
            proposer: me,
        };
        let n = self.nodes.len();
        for round in 0..4u32 {
            let r = Round::new(round);
            // Split the others: the first half sees `a`, the rest `alt`, member 0 sees both.
            let plan: Vec<(usize, Vec<Value>)> = (0..n)
                .filter(|j| *j != b)
                .map(|j| {
                    let values = if j == 0 {
                        vec![a, alt]
                    } else if j < n / 2 {
                        vec![a]
                    } else {
                        vec![alt]
                    };
                    (j, values)
                })
                .collect();
            for (j, values) in plan {
                for v in values {
                    let mut msgs = Vec::new();
                    if committee.leader(r) == me {
                        msgs.push(Message::Proposal(sign_proposal(
                            &self.keys,
                            Proposal {
                                height,
                                round: r,
                                value: v,
                                pol_round: Round::Nil,
                                proposer: me,
                            },
                        )));
                    }
                    for vote_type in [VoteType::Prevote, VoteType::Precommit] {
                        msgs.push(Message::Vote(sign_vote(
                            &self.keys,
                            Vote {
                                height,
                                round: r,
                                vote_type,
                                value: NilOrVal::Val(v.id()),
                                voter: me,
                            },
                        )));
                    }
                    for msg in msgs {
                        let delay = self.rng.range(0, 30);
                        self.at(
                            delay,
                            Event::Deliver {
                                from: b,
                                to: j,
                                msg,
                            },
                        );
                    }
                }
            }
        }
        let delay = self.rng.range(50, 150);
        self.at(delay, Event::ByzantineTick);
    }

    /// Schedules `n` crashes of random members, each restarted (from its log) after a while.
    fn crash_and_restart_at_random(&mut self, n: u64) {
        for i in 0..n {
            let who = self.rng.range(0, u64::from(self.k) - 1) as usize;
            let at = self.rng.range(0, 600) + i * 150;
            let down = self.rng.range(20, 300);
            self.at(at, Event::Crash { who });
            self.at(at + down, Event::Restart { who });
        }
    }

    /// Runs until members `who` decided `last_height` or `deadline_ms` passes.
    fn run(&mut self, who: &[usize], deadline_ms: u64) {
        while self.now <= deadline_ms {
            let done = who.iter().all(|i| {
                self.decisions
                    .get(&self.last_height)
                    .is_some_and(|d| d.contains_key(i))
            });
            if done || !self.step() {
                break;
            }
        }
    }

    fn assert_decided(&self, who: &[usize]) {
        for h in 0..=self.last_height {
            let d = self.decisions.get(&h);
            for i in who {
                assert!(
                    d.is_some_and(|d| d.contains_key(i)),
                    "seed {}: m{i} did not decide height {h} by t={} (decisions {:?})",
                    self.seed,
                    self.now,
                    self.decisions.keys().collect::<Vec<_>>()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Four honest members with reordered, delayed messages decide the same value at every height,
/// in round 0 (nothing fails), each leader handing over to itself.
#[test]
fn four_members_decide_the_same_values() {
    for seed in seeds(1, 8) {
        println!("seed {seed}");
        let mut sim = Sim::new(seed, 4, MemberIndex(0), 9);
        sim.start();
        sim.run(&[0, 1, 2, 3], 60_000);
        sim.assert_decided(&[0, 1, 2, 3]);
        for (h, d) in &sim.decisions {
            for (value, round) in d.values() {
                assert_eq!(*round, 0, "seed {seed}: height {h} needed round {round}");
                assert_eq!(value.call_id, call_at(Height(*h)));
            }
        }
    }
}

/// The leader's execution is wrong at height 0: the others' re-execution disagrees, they
/// prevote nil, and the next round's leader gets its (correct) value decided instead.
#[test]
fn a_value_validated_false_is_not_decided() {
    for seed in seeds(2, 4) {
        println!("seed {seed}");
        let mut sim = Sim::new(seed, 4, MemberIndex(0), 2);
        sim.nodes[0].faulty_exec.insert(0);
        sim.start();
        sim.run(&[0, 1, 2, 3], 60_000);
        sim.assert_decided(&[0, 1, 2, 3]);
        for (value, round) in sim.decisions[&0].values() {
            assert_eq!(value.receipt_id, receipt_at(Height(0)));
            assert_ne!(value.proposer, MemberIndex(0), "seed {seed}");
            assert!(*round >= 1);
        }
    }
}

/// One member of four never comes up: the other three (a quorum) keep deciding, skipping its
/// rounds by timeout when it should lead.
#[test]
fn a_dead_member_does_not_stop_decisions() {
    for seed in seeds(3, 4) {
        println!("seed {seed}");
        let mut sim = Sim::new(seed, 4, MemberIndex(0), 6);
        sim.kill(2);
        sim.start();
        sim.run(&[0, 1, 3], 120_000);
        sim.assert_decided(&[0, 1, 3]);
    }
}

/// The leader of height 1 (member 0, which proposed height 0) crashes right after deciding
/// height 0: the others time out round 0 and member 1 leads round 1 to a decision.
#[test]
fn a_crashed_leader_is_replaced_after_timeouts() {
    for seed in seeds(4, 4) {
        println!("seed {seed}");
        let mut sim = Sim::new(seed, 4, MemberIndex(0), 3);
        sim.start();
        sim.last_height = 0;
        sim.run(&[0], 60_000);
        sim.kill(0);
        sim.last_height = 3;
        // Others that had not decided height 0 yet will; all then start height 1 led by 0.
        for i in 1..4 {
            let first = sim.nodes[i].durable_first;
            let Some(inst) = sim.nodes[i].instance.as_mut() else {
                continue;
            };
            if inst.decided().is_some() && inst.height() == Height(0) {
                let actions = inst.start_height(Height(1), first);
                sim.apply(i, actions);
            }
        }
        sim.run(&[1, 2, 3], 120_000);
        sim.assert_decided(&[1, 2, 3]);
        for (value, round) in sim.decisions[&1].values() {
            assert!(
                *round >= 1,
                "seed {seed}: height 1 decided in round {round}"
            );
            assert_ne!(value.proposer, MemberIndex(0));
        }
    }
}

/// Member 3 is Byzantine and leads height 0: it sends different valid proposals to different
/// members, and prevotes and precommits both values in rounds 0..3, every height, for as long
/// as the run lasts. The three honest members never decide two values at one height (nor sign
/// two votes in one round, checked on every broadcast), keep deciding, and member 0, which got
/// both halves of each equivocation, reports verifiable evidence against member 3.
#[test]
fn an_equivocating_member_cannot_split_decisions() {
    for seed in seeds(5, 8) {
        println!("seed {seed}");
        let mut sim = Sim::new(seed, 4, MemberIndex(3), 4);
        sim.kill(3);
        sim.byzantine = Some(3);
        sim.accept_alt = true;
        sim.start();
        sim.at(0, Event::ByzantineTick);
        sim.run(&[0, 1, 2], 200_000);
        sim.assert_decided(&[0, 1, 2]);

        let committee = sim.committee();
        let verifier = sim.keys.signer(0);
        assert!(
            !sim.evidence.is_empty(),
            "seed {seed}: no evidence reported"
        );
        let mut kinds = BTreeSet::new();
        for (_, e) in &sim.evidence {
            assert_eq!(e.culprit(), MemberIndex(3));
            assert!(verify_misbehavior(&verifier, &committee, &domain(), e));
            kinds.insert(matches!(e, Misbehavior::DoubleVote(..)));
        }
        assert!(
            kinds.contains(&true),
            "seed {seed}: no double vote in the evidence"
        );
    }
}

/// A conflicting pair of proposals is evidence too, and forged evidence is not.
#[test]
fn double_proposals_are_evidence_and_forgeries_are_not() {
    let keys = Keys::new(4);
    let committee = Committee::new(4).expect("k > 0");
    let v = |receipt: u8| Value {
        call_id: [1; 32],
        receipt_id: [receipt; 32],
        proposer: MemberIndex(1),
    };
    let p = |receipt: u8, round: u32| Proposal {
        height: Height(5),
        round: Round::new(round),
        value: v(receipt),
        pol_round: Round::Nil,
        proposer: MemberIndex(1),
    };
    let verifier = keys.signer(0);
    let a = sign_proposal(&keys, p(1, 0));
    let b = sign_proposal(&keys, p(2, 0));
    let evidence = Misbehavior::DoubleProposal(a.clone(), b.clone());
    assert!(verify_misbehavior(
        &verifier,
        &committee,
        &domain(),
        &evidence
    ));
    // Different rounds are not a conflict.
    let c = sign_proposal(&keys, p(2, 1));
    assert!(!verify_misbehavior(
        &verifier,
        &committee,
        &domain(),
        &Misbehavior::DoubleProposal(a.clone(), c)
    ));
    // A proposal "by" member 1 signed by member 2 proves nothing against member 1.
    let forged = SignedProposal::new(
        p(3, 0),
        Signature(keys.signer(2).sign(&proposal_message(&domain(), &p(3, 0)))),
    );
    assert!(!verify_misbehavior(
        &verifier,
        &committee,
        &domain(),
        &Misbehavior::DoubleProposal(a, forged)
    ));
    // The same message twice is no double vote.
    let vote = Vote {
        height: Height(5),
        round: Round::new(0),
        vote_type: VoteType::Prevote,
        value: NilOrVal::Val(v(1).id()),
        voter: MemberIndex(2),
    };
    let sv = sign_vote(&keys, vote.clone());
    assert!(!verify_misbehavior(
        &verifier,
        &committee,
        &domain(),
        &Misbehavior::DoubleVote(sv.clone(), sv.clone())
    ));
    let nil = sign_vote(
        &keys,
        Vote {
            value: NilOrVal::Nil,
            ..vote
        },
    );
    assert!(verify_misbehavior(
        &verifier,
        &committee,
        &domain(),
        &Misbehavior::DoubleVote(sv, nil)
    ));
}

/// The stall of sim seeds 7027 and 9410. A Byzantine leader fills its round with two values
/// (the core keeps at most two distinct values per height and round), then re-proposes the
/// honest value V there too: the core verifies that proposal's signature, then drops it, and
/// would drop a verdict on V given at that round as well. The glue asked for a re-execution
/// anyway and counted V as answered (once per value and height), so when honest leaders
/// re-proposed V in later rounds this member never asked again, never held V's verdict, and
/// prevoted nil in every round: no polka ever again. Now only proposals the core keeps are
/// re-executed, and the next one of V is.
#[test]
fn a_value_dropped_from_a_flooded_round_is_validated_when_proposed_again() {
    let keys = Keys::new(4);
    let h = Height(0);
    let honest = Value {
        call_id: [0xC0; 32],
        receipt_id: [0xC1; 32],
        proposer: MemberIndex(0),
    };
    let byz = |b: u8| Value {
        call_id: [b; 32],
        receipt_id: [b; 32],
        proposer: MemberIndex(1),
    };
    let proposal = |round: u32, value: Value, pol_round: Round| {
        let proposer = MemberIndex(round % 4);
        Message::Proposal(sign_proposal(
            &keys,
            Proposal {
                height: h,
                round: Round::new(round),
                value,
                pol_round,
                proposer,
            },
        ))
    };
    let prevote = |round: u32, voter: u32| {
        Message::Vote(sign_vote(
            &keys,
            Vote {
                height: h,
                round: Round::new(round),
                vote_type: VoteType::Prevote,
                value: NilOrVal::Val(honest.id()),
                voter: MemberIndex(voter),
            },
        ))
    };
    // Performs like a driver whose re-executions answer at once (every value is valid):
    // returns what was sent and records what was re-executed.
    let asked = RefCell::new(Vec::<(u32, Value)>::new());
    let perform = |m: &mut Instance<Bls>, actions: Vec<Action>| -> Vec<SignedVote> {
        let mut todo = actions;
        let mut votes = Vec::new();
        while !todo.is_empty() {
            let mut next = Vec::new();
            for a in todo {
                match a {
                    Action::Validate { round, value, .. } => {
                        asked.borrow_mut().push((round, value));
                        next.extend(m.on_value_validated(h, value, true));
                    }
                    Action::Broadcast(Message::Vote(v)) => votes.push(v),
                    Action::Halt(r) => panic!("halted: {r}"),
                    _ => {}
                }
            }
            todo = next;
        }
        votes
    };

    // Member 3 is still in round 0 (it restarted). Member 1 leads round 1 and floods it: two
    // values of its own, then V.
    let mut m3 = Instance::new(config(4, 3), keys.signer(3)).expect("valid");
    let actions = m3.start_height(h, MemberIndex(0));
    perform(&mut m3, actions);
    for msg in [
        proposal(1, byz(0xB1), Round::Nil),
        proposal(1, byz(0xB2), Round::Nil),
        proposal(1, honest, Round::new(0)),
    ] {
        let actions = m3.on_message(msg);
        perform(&mut m3, actions);
    }
    // Then V's round-0 polka reaches it (before it, the core had no round to keep V's verdict
    // at; after it, it would keep it at round 0).
    for voter in 0..3 {
        let actions = m3.on_message(prevote(0, voter));
        perform(&mut m3, actions);
    }
    // Member 2 leads round 2 and re-proposes V (its polka round is 0); f + 1 prevotes of
    // round 2 take member 3 there.
    let actions = m3.on_message(proposal(2, honest, Round::new(0)));
    let mut votes = perform(&mut m3, actions);
    for voter in [0, 2] {
        let actions = m3.on_message(prevote(2, voter));
        votes.extend(perform(&mut m3, actions));
    }
    assert_eq!(m3.round(), Some(2));
    assert!(
        votes.iter().any(|v| v.message.voter == MemberIndex(3)
            && v.message.round == Round::new(2)
            && v.message.vote_type == VoteType::Prevote
            && v.message.value == NilOrVal::Val(honest.id())),
        "member 3 must prevote V in round 2: {votes:?}"
    );
    // Re-executed: what the core kept, each value once (V at the round where it was kept).
    assert_eq!(
        asked.into_inner(),
        vec![(1, byz(0xB1)), (1, byz(0xB2)), (2, honest)]
    );
    assert!(m3.halted().is_none());
}

/// Certificates: a genuine one verifies; too few signers, a bitmap that lies about who signed,
/// signatures from two rounds, prevotes passed off as precommits, another value, another
/// program, out-of-committee signers and reserved rounds are all refused.
#[test]
fn forged_certificates_are_rejected() {
    let keys = Keys::new(4);
    let committee = Committee::new(4).expect("k > 0");
    let verifier = keys.signer(0);
    let d = domain();
    let value = ValueId([9; 32]);
    let sign = |member: u32, round: u32, vote_type: VoteType, value: ValueId, d: &Domain| {
        keys.signer(member).sign(&vote_bytes(
            d,
            Height(3),
            Round::new(round),
            vote_type,
            &NilOrVal::Val(value),
        ))
    };
    let cert = |signers: &[u32], sigs: Vec<Vec<u8>>| {
        let mut bitmap = vec![0u8; 1];
        for s in signers {
            bitmap[0] |= 1 << s;
        }
        let refs: Vec<&[u8]> = sigs.iter().map(|s| s.as_slice()).collect();
        AggregateCertificate {
            height: 3,
            round: 0,
            value_id: value,
            signers: bitmap,
            signature: verifier.aggregate(&refs).expect("valid signatures"),
        }
    };
    let pc = |m: u32| sign(m, 0, VoteType::Precommit, value, &d);
    let verify = |c: &AggregateCertificate| verify_commit_certificate(&verifier, &committee, &d, c);

    let good = cert(&[0, 1, 3], vec![pc(0), pc(1), pc(3)]);
    assert_eq!(verify(&good), Ok(()));
    let all = cert(&[0, 1, 2, 3], vec![pc(0), pc(1), pc(2), pc(3)]);
    assert_eq!(verify(&all), Ok(()));

    // Two of four is not a quorum.
    let two = cert(&[0, 1], vec![pc(0), pc(1)]);
    assert_eq!(
        verify(&two),
        Err(CertError::TooFewSigners {
            signed: 2,
            quorum: 3
        })
    );
    // The bitmap claims three signers, the signature holds two.
    let liar = cert(&[0, 1, 2], vec![pc(0), pc(1)]);
    assert_eq!(verify(&liar), Err(CertError::BadSignature));
    // Three precommits for the value, but one from round 1: no round had a quorum.
    let mixed = cert(
        &[0, 1, 2],
        vec![pc(0), pc(1), sign(2, 1, VoteType::Precommit, value, &d)],
    );
    assert_eq!(verify(&mixed), Err(CertError::BadSignature));
    let mut round1 = mixed.clone();
    round1.round = 1;
    assert_eq!(verify(&round1), Err(CertError::BadSignature));
    // Prevotes are not precommits.
    let prevotes = cert(
        &[0, 1, 2],
        (0..3)
            .map(|m| sign(m, 0, VoteType::Prevote, value, &d))
            .collect(),
    );
    assert_eq!(verify(&prevotes), Err(CertError::BadSignature));
    // Another value, the same signatures.
    let mut other_value = good.clone();
    other_value.value_id = ValueId([8; 32]);
    assert_eq!(verify(&other_value), Err(CertError::BadSignature));
    // Signed for another program.
    let other = Domain {
        network: d.network.clone(),
        program: [8; 32],
    };
    let elsewhere = cert(
        &[0, 1, 2],
        (0..3)
            .map(|m| sign(m, 0, VoteType::Precommit, value, &other))
            .collect(),
    );
    assert_eq!(verify(&elsewhere), Err(CertError::BadSignature));
    // Member 4 does not exist in a committee of 4; the bitmap has one byte for k = 4.
    let mut outsider = good.clone();
    outsider.signers[0] |= 1 << 4;
    assert_eq!(
        verify(&outsider),
        Err(CertError::UnknownSigner(MemberIndex(4)))
    );
    let mut long = good.clone();
    long.signers.push(0);
    assert_eq!(verify(&long), Err(CertError::BadBitmap));
    let mut reserved = good.clone();
    reserved.round = u32::MAX;
    assert_eq!(verify(&reserved), Err(CertError::BadRound));
    // Garbage instead of a signature.
    let mut garbage = good;
    garbage.signature = vec![0xff; 48];
    assert_eq!(verify(&garbage), Err(CertError::BadSignature));
}

/// Member 1 prevotes the leader's proposal A, crashes, and restarts from its log; then the
/// (Byzantine) leader shows it a different proposal B for the same round. Restarted from its
/// log, member 1 re-sends its recorded prevote for A (the same signature) and signs nothing
/// for B. The control: restarted without its log, it would prevote B, a double vote.
#[test]
fn wal_replay_prevents_a_conflicting_vote() {
    let keys = Keys::new(4);
    let leader = MemberIndex(0);
    let value = |receipt: u8| Value {
        call_id: [1; 32],
        receipt_id: [receipt; 32],
        proposer: leader,
    };
    let proposal = |receipt: u8| {
        Message::Proposal(sign_proposal(
            &keys,
            Proposal {
                height: Height(0),
                round: Round::new(0),
                value: value(receipt),
                pol_round: Round::Nil,
                proposer: leader,
            },
        ))
    };
    let wal = RefCell::new(Vec::<WalEntry>::new());
    // Performs what a driver would, keeping the log (through its encoding) and what was sent.
    let perform = |actions: Vec<Action>| -> (Vec<SignedVote>, Vec<(Height, Value)>) {
        let (mut votes, mut validate) = (Vec::new(), Vec::new());
        for a in actions {
            match a {
                Action::WalAppend(e) => wal
                    .borrow_mut()
                    .push(WalEntry::decode(&e.encode()).expect("decodes")),
                Action::Broadcast(Message::Vote(v)) => votes.push(v),
                Action::Validate { height, value, .. } => validate.push((height, value)),
                Action::Halt(r) => panic!("halted: {r}"),
                _ => {}
            }
        }
        (votes, validate)
    };
    let prevote_for = |votes: &[SignedVote], v: &Value| {
        votes.iter().any(|s| {
            s.message.vote_type == VoteType::Prevote && s.message.value == NilOrVal::Val(v.id())
        })
    };

    let mut m1 = Instance::new(config(4, 1), keys.signer(1)).expect("valid");
    perform(m1.start_height(Height(0), leader));
    let (votes, validate) = perform(m1.on_message(proposal(0xA)));
    assert!(
        votes.is_empty(),
        "no prevote before the re-execution answers"
    );
    assert_eq!(validate, vec![(Height(0), value(0xA))]);
    let (votes, _) = perform(m1.on_value_validated(Height(0), value(0xA), true));
    assert!(prevote_for(&votes, &value(0xA)));
    let signed_before = votes[0].clone();
    drop(m1);

    // Restart from the log.
    let entries = wal.borrow().clone();
    assert!(!entries.is_empty());
    let mut m1 = Instance::new(config(4, 1), keys.signer(1)).expect("valid");
    let (votes, validate) = perform(m1.recover(Height(0), leader, &entries));
    assert!(validate.is_empty(), "the verdict on A is in the log");
    assert!(
        votes.contains(&signed_before),
        "the recorded prevote is sent again"
    );
    assert_eq!(votes.len(), 1);
    let (mut votes, validate) = perform(m1.on_message(proposal(0xB)));
    for (h, v) in validate {
        votes.extend(perform(m1.on_value_validated(h, v, true)).0);
    }
    assert!(
        !prevote_for(&votes, &value(0xB)),
        "restarted from its log, member 1 must not prevote B"
    );
    assert!(m1.halted().is_none());

    // Control: without its log it would sign a second prevote in round 0.
    let mut amnesiac = Instance::new(config(4, 1), keys.signer(1)).expect("valid");
    perform(amnesiac.start_height(Height(0), leader));
    let (mut votes, validate) = perform(amnesiac.on_message(proposal(0xB)));
    for (h, v) in validate {
        votes.extend(perform(amnesiac.on_value_validated(h, v, true)).0);
    }
    assert!(
        prevote_for(&votes, &value(0xB)),
        "the control must show the double vote"
    );
}

/// A log whose recorded vote differs from what replay re-derives (as after a non-determinism,
/// or a tampered log) halts the member instead of letting it sign a second vote.
#[test]
fn wal_replay_halts_on_a_divergent_record() {
    let keys = Keys::new(4);
    let leader = MemberIndex(0);
    let v = Value {
        call_id: [1; 32],
        receipt_id: [2; 32],
        proposer: leader,
    };
    let mut m1 = Instance::new(config(4, 1), keys.signer(1)).expect("valid");
    let mut wal = Vec::new();
    let keep = |actions: Vec<Action>, wal: &mut Vec<WalEntry>| {
        for a in actions {
            if let Action::WalAppend(e) = a {
                wal.push(e);
            }
        }
    };
    keep(m1.start_height(Height(0), leader), &mut wal);
    let p = Proposal {
        height: Height(0),
        round: Round::new(0),
        value: v,
        pol_round: Round::Nil,
        proposer: leader,
    };
    keep(
        m1.on_message(Message::Proposal(sign_proposal(&keys, p))),
        &mut wal,
    );
    keep(m1.on_value_validated(Height(0), v, true), &mut wal);
    // Swap our recorded prevote for A with a nil prevote, properly signed.
    let mut swapped = false;
    for e in wal.iter_mut() {
        let Input::Vote(vote) = &e.input else {
            continue;
        };
        if vote.message.voter == MemberIndex(1) {
            let nil = Vote {
                value: NilOrVal::Nil,
                ..vote.message.clone()
            };
            e.input = Input::Vote(sign_vote(&keys, nil));
            swapped = true;
        }
    }
    assert!(swapped, "the log holds our prevote");
    let mut m1 = Instance::new(config(4, 1), keys.signer(1)).expect("valid");
    let actions = m1.recover(Height(0), leader, &wal);
    assert!(m1.halted().is_some(), "replay must halt, got {actions:?}");
    assert!(matches!(actions.last(), Some(Action::Halt(_))));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::Vote(v)) if v.message.value.is_val())),
        "no vote for A may leave"
    );
}

/// Random crashes and restarts from the log while the committee runs: decisions agree, every
/// member eventually decides every height, and no member ever signs two votes for one round
/// (the ledger check on every broadcast).
#[test]
fn restarts_from_the_log_keep_members_consistent() {
    for seed in seeds(6, 6) {
        println!("seed {seed}");
        let mut sim = Sim::new(seed, 4, MemberIndex(0), 6);
        sim.start();
        sim.crash_and_restart_at_random(8);
        sim.run(&[0, 1, 2, 3], 300_000);
        sim.assert_decided(&[0, 1, 2, 3]);
    }
}

/// The committee helpers follow the protocol's arithmetic.
#[test]
fn quorums_and_leaders() {
    for (k, q) in [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 3),
        (5, 4),
        (6, 5),
        (7, 5),
        (10, 7),
    ] {
        let c = Committee::new(k).expect("k > 0");
        assert_eq!(c.quorum(), q, "k = {k}");
    }
    let c = Committee::new(4).expect("k > 0").with_first(MemberIndex(3));
    let leaders: Vec<u32> = (0..5).map(|r| c.leader(Round::new(r)).0).collect();
    assert_eq!(leaders, vec![3, 0, 1, 2, 3]);
    assert!(Committee::new(0).is_none());
    assert!(matches!(
        Instance::new(config(4, 4), Keys::new(4).signer(0)),
        Err(ConfigError::NotAMember)
    ));
}

/// The planted bug "a restarted member forgets its log" is caught by the simulator: for some
/// seed, a member signs two different votes in one round (the ledger check fails). Shows that
/// the restart test above would notice a broken log or replay.
#[test]
fn the_simulator_catches_a_member_that_forgets_its_log() {
    let mut caught = Vec::new();
    for seed in 0..10u64 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sim = Sim::new(7000 + seed, 4, MemberIndex(0), 6);
            sim.amnesia = true;
            sim.start();
            sim.crash_and_restart_at_random(8);
            sim.run(&[0, 1, 2, 3], 100_000);
        }));
        if let Err(e) = outcome {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            if msg.contains("two different votes") {
                caught.push(7000 + seed);
            }
        }
    }
    println!("seeds that caught the planted bug: {caught:?}");
    assert!(
        !caught.is_empty(),
        "no seed caught a member that forgets its log"
    );
}

/// Decoders read what other members send: every truncation and random corruption of valid
/// bytes is refused or decoded, never a panic, and valid bytes round-trip.
#[test]
fn decoders_refuse_garbage_without_panicking() {
    let keys = Keys::new(4);
    let vote = sign_vote(
        &keys,
        Vote {
            height: Height(9),
            round: Round::new(2),
            vote_type: VoteType::Precommit,
            value: NilOrVal::Val(ValueId([3; 32])),
            voter: MemberIndex(2),
        },
    );
    let polka = PolkaCertificate {
        height: Height(9),
        round: Round::new(2),
        value_id: ValueId([3; 32]),
        polka_signatures: vec![malachitebft_core_types::PolkaSignature::new(
            MemberIndex(1),
            vote.signature.clone(),
        )],
    };
    let samples = [
        Message::Vote(vote.clone()),
        Message::PolkaCertificate(polka.clone()),
        Message::Proposal(sign_proposal(
            &keys,
            Proposal {
                height: Height(9),
                round: Round::new(1),
                value: Value {
                    call_id: [1; 32],
                    receipt_id: [2; 32],
                    proposer: MemberIndex(1),
                },
                pol_round: Round::Nil,
                proposer: MemberIndex(1),
            },
        )),
    ];
    let mut rng = Rng(42);
    for msg in samples {
        let bytes = msg.encode();
        assert_eq!(Message::decode(&bytes), Ok(msg.clone()));
        for cut in 0..bytes.len() {
            assert!(Message::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::decode(&longer).is_err());
        for _ in 0..2_000 {
            let mut b = bytes.clone();
            let i = rng.range(0, b.len() as u64 - 1) as usize;
            b[i] = rng.next() as u8;
            let _ = Message::decode(&b);
            let _ = WalEntry::decode(&b);
        }
    }
    for _ in 0..2_000 {
        let len = rng.range(0, 200) as usize;
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = Message::decode(&b);
        let _ = WalEntry::decode(&b);
    }
}
