//! The async shell around one program's [`Sequencer`] on one node, the same shape as the
//! PBFT driver (`consensus/driver.rs`): an actor feeds the sequencer its inputs (client
//! calls, committee messages, timers, execution results) with the current time and performs
//! the actions it returns, in order, through [`Transport`], [`Durable`] and [`Executor`].
//! No consensus decision is made here.
//!
//! Ordering rules the sequencer relies on: a `Persist` completes before any later action of
//! the same list (a vote is durable before the message revealing it leaves) and a failed one
//! stops the member: the driver feeds [`Event::PersistFailed`], performs nothing more and
//! ends, leaving the reason in [`Driver::stopped`] (the glue restarts it from storage once the
//! disk is back). A `Commit` completes before any later action too, then the driver feeds
//! `Committed`. Executions and validations run concurrently and come back as events; timers
//! are sleeps. Every task is spawned in [`Tasks`] and ends at its shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::certificate::Misbehavior;
use super::context::{Height, MemberIndex, Value};
use super::instance::WalEntry;
use super::sequencer::{
    Action, CallId, CallResult, Decided, Event, Message, ReceiptId, Record, Sequencer,
    SequencerConfig,
};
use super::sign::Signing;
use crate::util::Tasks;

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Carries messages to the other members (best effort: the sequencer retransmits).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, to: MemberIndex, msg: Message);
}

/// The member's durable storage.
pub trait Durable: Send + Sync + 'static {
    /// Appends to the current height's write-ahead log.
    fn append(&self, entry: WalEntry) -> BoxFuture<Result<(), String>>;
    /// Stores a decision (idempotent) and then truncates the log of heights up to it.
    fn decide(&self, decided: Decided) -> BoxFuture<Result<(), String>>;
    /// Stored decisions of heights `from..until` (to help a member that fell far behind).
    fn decisions(&self, from: Height, until: Height) -> BoxFuture<Vec<Decided>>;
}

/// Why the leader's execution produced no value.
#[derive(Debug)]
pub enum ExecuteError {
    /// A local, non-reproducible cause (timeout, cancellation, missing payload).
    Failed(String),
    /// The state already holds `height`.
    Behind,
    /// The store already committed this call.
    Committed {
        height: Height,
        receipt_id: ReceiptId,
    },
}

/// The program's state and VM.
pub trait Executor: Send + Sync + 'static {
    /// Executes `call_id` at `height` as the leader.
    fn execute(
        self: Arc<Self>,
        height: Height,
        call_id: CallId,
    ) -> BoxFuture<Result<ReceiptId, ExecuteError>>;
    /// Re-executes `value` at `height`: whether this node gets the same receipt (false for a
    /// call its store already committed).
    fn validate(self: Arc<Self>, height: Height, value: Value) -> BoxFuture<bool>;
    /// Applies a decided height. Idempotent.
    fn commit(self: Arc<Self>, decided: Decided) -> BoxFuture<Result<(), String>>;
    /// Members caught signing conflicting messages (checked by the sequencer): to be kept
    /// and served. Best effort.
    fn evidence(&self, _evidence: Vec<Misbehavior>) {}
}

enum Input {
    Submit {
        call_id: CallId,
        reply: oneshot::Sender<CallResult>,
    },
    Event(Event),
}

/// A running driver; dropping every handle stops it.
#[derive(Clone)]
pub struct Driver {
    inputs: mpsc::UnboundedSender<Input>,
    stopped: Arc<Mutex<Option<String>>>,
}

impl Driver {
    /// Starts a member from what `durable` handed back (`wal`, `last`): re-applies `last`
    /// (idempotent), then restarts the sequencer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn<S: Signing + Clone + Send + 'static>(
        config: SequencerConfig,
        signing: S,
        wal: Vec<WalEntry>,
        last: Option<Decided>,
        transport: Arc<dyn Transport>,
        durable: Arc<dyn Durable>,
        executor: Arc<dyn Executor>,
        tasks: Tasks,
    ) -> Result<Driver, String> {
        let k = config.instance.k;
        let me = config.instance.me;
        let sequencer = Sequencer::new(config, signing).map_err(|e| format!("{e:?}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stopped = Arc::new(Mutex::new(None));
        let actor = Actor {
            sequencer,
            k,
            me,
            transport,
            durable,
            executor,
            inputs: tx.downgrade(),
            waiting: HashMap::new(),
            epoch: Instant::now(),
            tasks: tasks.clone(),
            stopped: stopped.clone(),
        };
        tasks.spawn(actor.run(rx, wal, last));
        Ok(Driver {
            inputs: tx,
            stopped,
        })
    }

    /// Submits a client call and waits for its result here.
    pub async fn call(&self, call_id: CallId) -> CallResult {
        let (reply, answer) = oneshot::channel();
        let gone = || CallResult::Unknown {
            reason: "the committee driver stopped".into(),
        };
        if self.inputs.send(Input::Submit { call_id, reply }).is_err() {
            return gone();
        }
        answer.await.unwrap_or_else(|_| gone())
    }

    /// A message from member `from` (authenticated by the transport).
    pub fn deliver(&self, from: MemberIndex, msg: Message) {
        let _ = self.inputs.send(Input::Event(Event::Message { from, msg }));
    }

    /// Why the member stopped (a failed persist, a halt), if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

struct Actor<S> {
    sequencer: Sequencer<S>,
    k: u32,
    me: MemberIndex,
    transport: Arc<dyn Transport>,
    durable: Arc<dyn Durable>,
    executor: Arc<dyn Executor>,
    inputs: mpsc::WeakUnboundedSender<Input>,
    waiting: HashMap<CallId, Vec<oneshot::Sender<CallResult>>>,
    epoch: Instant,
    tasks: Tasks,
    stopped: Arc<Mutex<Option<String>>>,
}

impl<S: Signing + Clone + Send + 'static> Actor<S> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn stop(&mut self, reason: String) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        for (_, waiters) in self.waiting.drain() {
            for w in waiters {
                let _ = w.send(CallResult::Unknown {
                    reason: format!("the committee member stopped: {reason}"),
                });
            }
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        wal: Vec<WalEntry>,
        last: Option<Decided>,
    ) {
        if let Some(d) = &last
            && let Err(e) = self.executor.clone().commit(d.clone()).await
        {
            return self.stop(format!("re-applying height {}: {e}", d.height));
        }
        let actions = self
            .sequencer
            .handle(Event::Restart { wal, last }, self.now_ms());
        if !self.perform(actions).await {
            return;
        }
        while let Some(input) = rx.recv().await {
            let event = match input {
                Input::Submit { call_id, reply } => {
                    self.waiting.entry(call_id).or_default().push(reply);
                    Event::Submit { call_id }
                }
                Input::Event(e) => e,
            };
            tracing::trace!(
                member = self.me.0,
                at_ms = self.now_ms(),
                event = event_name(&event),
                "consensus event"
            );
            let actions = self.sequencer.handle(event, self.now_ms());
            if !self.perform(actions).await {
                return;
            }
        }
    }

    fn feed(&self, event: Event) {
        if let Some(inputs) = self.inputs.upgrade() {
            let _ = inputs.send(Input::Event(event));
        }
    }

    /// Performs `actions` in order; false once the member stopped.
    async fn perform(&mut self, actions: Vec<Action>) -> bool {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            tracing::trace!(
                member = self.me.0,
                at_ms = self.now_ms(),
                action = action_name(&action),
                "consensus action"
            );
            match action {
                Action::Send { to, msg } => self.transport.send(to, msg),
                Action::Broadcast { msg } => {
                    for to in (0..self.k).map(MemberIndex).filter(|m| *m != self.me) {
                        self.transport.send(to, msg.clone());
                    }
                }
                Action::Persist(record) => {
                    let result = match record {
                        Record::Wal(entry) => self.durable.append(entry).await,
                        Record::Decision(d) => self.durable.decide(d).await,
                    };
                    if let Err(reason) = result {
                        // Nothing after a failed persist is performed: the rest of the list
                        // is dropped and the sequencer stops.
                        let stop = self
                            .sequencer
                            .handle(Event::PersistFailed { reason }, self.now_ms());
                        let reason = stop
                            .iter()
                            .find_map(|a| match a {
                                Action::Stop(r) => Some(r.clone()),
                                _ => None,
                            })
                            .unwrap_or_else(|| "persisting failed".into());
                        self.stop(reason);
                        return false;
                    }
                }
                Action::Execute {
                    height,
                    round,
                    call_id,
                } => {
                    let (executor, inputs) = (self.executor.clone(), self.inputs.clone());
                    self.tasks.spawn(async move {
                        let event = match executor.execute(height, call_id).await {
                            Ok(receipt_id) => Event::Executed {
                                height,
                                round,
                                call_id,
                                receipt_id,
                            },
                            Err(ExecuteError::Behind) => Event::Behind { height },
                            Err(ExecuteError::Committed { height, receipt_id }) => {
                                Event::AlreadyCommitted {
                                    call_id,
                                    height,
                                    receipt_id,
                                }
                            }
                            Err(ExecuteError::Failed(reason)) => Event::ExecuteFailed {
                                height,
                                round,
                                call_id,
                                reason,
                                reproducible: false,
                            },
                        };
                        if let Some(inputs) = inputs.upgrade() {
                            let _ = inputs.send(Input::Event(event));
                        }
                    });
                }
                Action::Validate {
                    height,
                    round,
                    value,
                } => {
                    let (executor, inputs) = (self.executor.clone(), self.inputs.clone());
                    self.tasks.spawn(async move {
                        let valid = executor.validate(height, value).await;
                        if let Some(inputs) = inputs.upgrade() {
                            let _ = inputs.send(Input::Event(Event::Validated {
                                height,
                                round,
                                value,
                                valid,
                            }));
                        }
                    });
                }
                Action::Commit(d) => {
                    let height = d.height;
                    if let Err(e) = self.executor.clone().commit(d).await {
                        self.stop(format!("applying height {height} failed: {e}"));
                        return false;
                    }
                    self.feed(Event::Committed { height });
                }
                Action::Reply { call_id, result } => {
                    for w in self.waiting.remove(&call_id).unwrap_or_default() {
                        let _ = w.send(result.clone());
                    }
                }
                Action::SetTimer { at_ms, timer } => {
                    let wait = at_ms.saturating_sub(self.now_ms());
                    let inputs = self.inputs.clone();
                    self.tasks.spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                        if let Some(inputs) = inputs.upgrade() {
                            let _ = inputs.send(Input::Event(Event::Timer(timer)));
                        }
                    });
                }
                Action::SendStoredDecisions {
                    to,
                    from_height,
                    until,
                } => {
                    let (durable, transport) = (self.durable.clone(), self.transport.clone());
                    self.tasks.spawn(async move {
                        for d in durable.decisions(from_height, until).await {
                            transport.send(to, Message::Decision(d));
                        }
                    });
                }
                Action::Evidence(evidence) => self.executor.evidence(evidence),
                Action::Stop(reason) => {
                    self.stop(reason);
                    return false;
                }
            }
        }
        true
    }
}

/// An action's name, for traces.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Send { msg, .. } | Action::Broadcast { msg } => match msg {
            Message::Consensus(super::instance::Message::Proposal(_)) => "send proposal",
            Message::Consensus(super::instance::Message::Vote(_)) => "send vote",
            Message::Consensus(_) => "send certificate",
            Message::Forward { .. } => "send forward",
            Message::DecisionRequest { .. } => "send decision request",
            Message::Decision(_) => "send decision",
        },
        Action::Persist(Record::Wal(_)) => "persist log entry",
        Action::Persist(Record::Decision(_)) => "persist decision",
        Action::Execute { .. } => "execute",
        Action::Validate { .. } => "validate",
        Action::Commit(_) => "commit",
        Action::Reply { .. } => "reply",
        Action::SetTimer { .. } => "set timer",
        Action::SendStoredDecisions { .. } => "send stored decisions",
        Action::Evidence(_) => "evidence",
        Action::Stop(_) => "stop",
    }
}

/// An event's name, for traces.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Submit { .. } => "submit",
        Event::Message { .. } => "message",
        Event::Executed { .. } => "executed",
        Event::ExecuteFailed { .. } => "execute failed",
        Event::Behind { .. } => "behind",
        Event::AlreadyCommitted { .. } => "already committed",
        Event::Validated { .. } => "validated",
        Event::Timer(_) => "timer",
        Event::Restart { .. } => "restart",
        Event::Committed { .. } => "committed",
        Event::PersistFailed { .. } => "persist failed",
    }
}

#[cfg(test)]
mod tests {
    //! Four drivers in one process over an in-memory network, with in-memory storage that can
    //! be made to fail: what the node will run, before `net` and `programs` implement the
    //! traits.

    use super::*;
    use crate::consensus::tendermint::sim::{Mac, mac_keys};
    use crate::consensus::tendermint::{Domain, TimeoutConfig};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    const K: u32 = 4;

    fn receipt(height: Height, call: &CallId, prev: &ReceiptId) -> ReceiptId {
        let mut h = blake3::Hasher::new();
        h.update(&height.0.to_be_bytes()).update(call).update(prev);
        *h.finalize().as_bytes()
    }

    #[derive(Default)]
    struct Node {
        wal: Mutex<Vec<WalEntry>>,
        decisions: Mutex<BTreeMap<u64, Decided>>,
        applied: Mutex<Vec<(CallId, ReceiptId)>>,
        disk_fails: AtomicBool,
    }

    struct Net {
        nodes: Vec<Arc<Node>>,
        drivers: Mutex<Vec<Option<Driver>>>,
    }

    struct Link {
        net: Arc<Net>,
        me: usize,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl Transport for Link {
        fn send(&self, to: MemberIndex, msg: Message) {
            let driver = lock(&self.net.drivers)[to.0 as usize].clone();
            if let Some(d) = driver {
                d.deliver(MemberIndex(self.me as u32), msg);
            }
        }
    }

    impl Durable for Link {
        fn append(&self, entry: WalEntry) -> BoxFuture<Result<(), String>> {
            let node = self.net.nodes[self.me].clone();
            Box::pin(async move {
                if node.disk_fails.load(Ordering::SeqCst) {
                    return Err("disk full".into());
                }
                lock(&node.wal).push(entry);
                Ok(())
            })
        }
        fn decide(&self, d: Decided) -> BoxFuture<Result<(), String>> {
            let node = self.net.nodes[self.me].clone();
            Box::pin(async move {
                lock(&node.wal).retain(|e| e.height > d.height);
                lock(&node.decisions).insert(d.height.0, d);
                Ok(())
            })
        }
        fn decisions(&self, from: Height, until: Height) -> BoxFuture<Vec<Decided>> {
            let ds = lock(&self.net.nodes[self.me].decisions)
                .range(from.0..until.0)
                .map(|(_, d)| d.clone())
                .collect();
            Box::pin(async move { ds })
        }
    }

    impl Executor for Link {
        fn execute(
            self: Arc<Self>,
            height: Height,
            call_id: CallId,
        ) -> BoxFuture<Result<ReceiptId, ExecuteError>> {
            let applied = lock(&self.net.nodes[self.me].applied).clone();
            let result = if let Some(h) = applied.iter().position(|a| a.0 == call_id) {
                Err(ExecuteError::Committed {
                    height: Height(h as u64),
                    receipt_id: applied[h].1,
                })
            } else if applied.len() as u64 > height.0 {
                Err(ExecuteError::Behind)
            } else {
                let prev = applied.last().map(|a| a.1).unwrap_or_default();
                Ok(receipt(height, &call_id, &prev))
            };
            Box::pin(async move { result })
        }
        fn validate(self: Arc<Self>, height: Height, value: Value) -> BoxFuture<bool> {
            let applied = lock(&self.net.nodes[self.me].applied).clone();
            let prev = applied.last().map(|a| a.1).unwrap_or_default();
            let ok = applied.len() as u64 == height.0
                && !applied.iter().any(|a| a.0 == value.call_id)
                && receipt(height, &value.call_id, &prev) == value.receipt_id;
            Box::pin(async move { ok })
        }
        fn commit(self: Arc<Self>, d: Decided) -> BoxFuture<Result<(), String>> {
            let mut applied = lock(&self.net.nodes[self.me].applied);
            if applied.len() as u64 == d.height.0 {
                applied.push((d.value.call_id, d.value.receipt_id));
            }
            Box::pin(async { Ok(()) })
        }
    }

    fn start(net: &Arc<Net>, keys: &Keys, me: usize, tasks: &Tasks) {
        let link = Arc::new(Link {
            net: net.clone(),
            me,
        });
        let node = &net.nodes[me];
        let wal = lock(&node.wal).clone();
        let last = lock(&node.decisions).values().next_back().cloned();
        let timeouts = TimeoutConfig {
            propose_ms: 200,
            propose_delta_ms: 100,
            prevote_ms: 100,
            prevote_delta_ms: 50,
            precommit_ms: 100,
            precommit_delta_ms: 50,
            rebroadcast_ms: 400,
            max_ms: 2_000,
        };
        let domain = Domain {
            network: "onvm-test".into(),
            program: [5; 32],
        };
        let config = SequencerConfig::with_timeouts(domain, K, MemberIndex(me as u32), timeouts);
        let driver = Driver::spawn(
            config,
            keys(me as u32),
            wal,
            last,
            link.clone(),
            link.clone(),
            link,
            tasks.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        lock(&net.drivers)[me] = Some(driver);
    }

    type Keys = Arc<dyn Fn(u32) -> Mac + Send + Sync>;

    fn network(tasks: &Tasks) -> (Arc<Net>, Keys) {
        let keys: Keys = Arc::new(mac_keys(K));
        let net = Arc::new(Net {
            nodes: (0..K).map(|_| Arc::new(Node::default())).collect(),
            drivers: Mutex::new(vec![None; K as usize]),
        });
        for me in 0..K as usize {
            start(&net, &keys, me, tasks);
        }
        (net, keys)
    }

    fn driver(net: &Net, i: usize) -> Driver {
        lock(&net.drivers)[i]
            .clone()
            .unwrap_or_else(|| panic!("driver {i} runs"))
    }

    async fn finalized(d: &Driver, call: CallId) -> Height {
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), d.call(call))
            .await
            .unwrap_or_else(|_| panic!("the call finalizes in time"));
        match r {
            CallResult::Finalized { height, .. } => height,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn calls_at_any_member_finalize_once_and_shutdown_ends_every_task() {
        let tasks = Tasks::default();
        let (net, _keys) = network(&tasks);
        let mut heights = Vec::new();
        for n in 0..6u8 {
            heights.push(finalized(&driver(&net, n as usize % 4), [n; 32]).await.0);
        }
        heights.sort();
        assert_eq!(heights, (0..6).collect::<Vec<_>>());
        // A retry of a decided call is answered, not run again.
        assert!(finalized(&driver(&net, 2), [3; 32]).await.0 < 6);
        // The log does not grow with history: decided heights truncate it.
        for n in &net.nodes {
            assert!(lock(&n.wal).iter().all(|e| e.height.0 >= 5));
        }
        tasks.shutdown().await;
        assert_eq!(tasks.running(), 0, "actor, timers, executions all ended");
    }

    #[tokio::test]
    async fn a_failed_persist_stops_the_member_visibly_and_a_restart_recovers() {
        let tasks = Tasks::default();
        let (net, keys) = network(&tasks);
        assert_eq!(finalized(&driver(&net, 1), [1; 32]).await.0, 0);
        net.nodes[3].disk_fails.store(true, Ordering::SeqCst);
        // The others decide without member 3; member 3 stops at its first failed append.
        assert_eq!(finalized(&driver(&net, 0), [2; 32]).await.0, 1);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while driver(&net, 3).stopped().is_none() {
            assert!(Instant::now() < deadline, "member 3 reports its stop");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let why = driver(&net, 3).stopped().unwrap_or_default();
        assert!(why.contains("disk full"), "{why}");
        // The disk is back: the glue restarts it from storage, and it catches up.
        net.nodes[3].disk_fails.store(false, Ordering::SeqCst);
        start(&net, &keys, 3, &tasks);
        assert_eq!(finalized(&driver(&net, 3), [3; 32]).await.0, 2);
        tasks.shutdown().await;
    }
}
