//! The async shell around one program's [`pbft::Member`] on one node: it feeds the member its
//! inputs (client calls, committee messages, timers, execution results) with the current time,
//! and performs the actions it returns, in order, through three small traits the node
//! implements: [`Transport`] (the network), [`Durable`] (votes in the store) and [`Executor`]
//! (the VM and the program's state). No consensus decision is made here: the member decides,
//! the driver only carries out (the simulator in `super::sim` drives the same member).
//!
//! Ordering rules the member relies on (`pbft::Action`): a `Persist` completes before any later
//! action of the same batch (a vote is durable before the message revealing it leaves); a
//! `Commit` completes before any later `Execute`/`Validate`, since those run on top of the
//! committed state; executions and validations run concurrently with message handling and come
//! back as events.
//!
//! The node runs one driver per PBFT program it is a member of (`super::committees`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::util::Tasks;

use super::pbft::{
    Action, CallId, CallResult, Config, Decision, Digest, Event, Height, Member, MemberIndex,
    Message, Persisted, PersistedChange, Proposal, View,
};

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Carries consensus messages to the other members of the program's committee. Best effort:
/// the member retransmits what matters, so a lost message is only a delay.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, to: MemberIndex, msg: Message);
}

/// Makes votes and decisions durable before the driver goes on.
pub trait Durable: Send + Sync + 'static {
    fn persist(&self, change: PersistedChange) -> BoxFuture<Result<(), String>>;
}

/// Why the leader's execution of a call produced no proposal.
#[derive(Debug)]
pub enum ExecuteError {
    /// The call cannot run here (refused, timed out, cancelled): the member abandons it.
    Failed(String),
    /// The state already holds `height`: this node applied its decision from the DAG before
    /// its member heard of it. Not the call's fault: the member asks the others for the
    /// decision and proposes the call at the next height (or a view change hands it on).
    Behind,
}

/// Runs calls against the program's state, which stands at the last committed height.
pub trait Executor: Send + Sync + 'static {
    /// Executes `call_id` at `height` (as leader): its receipt id, or why it could not run here
    /// (a wall-clock timeout, a cancellation: the height is not consumed). Executions run
    /// concurrently with commits: when the state is no longer at `height` (it was decided
    /// meanwhile), say so with [`ExecuteError::Behind`].
    fn execute(
        self: Arc<Self>,
        height: Height,
        call_id: CallId,
    ) -> BoxFuture<Result<Digest, ExecuteError>>;
    /// Re-executes a proposal at `height` (as replica): whether this node computes the same
    /// receipt id.
    fn validate(self: Arc<Self>, height: Height, proposal: Proposal) -> BoxFuture<bool>;
    /// Applies a finalized height (it was persisted just before). Must be idempotent: after a
    /// crash the persisted log's unapplied tail is committed again.
    fn commit(self: Arc<Self>, decision: Decision) -> BoxFuture<Result<(), String>>;
}

/// Votes in the node's database (`Store::persist_consensus`), written on the blocking pool.
pub struct StoreDurable {
    pub store: crate::store::Store,
    pub program: onvm_rpc_api::ProgramId,
}

impl Durable for StoreDurable {
    fn persist(&self, change: PersistedChange) -> BoxFuture<Result<(), String>> {
        let (store, program) = (self.store.clone(), self.program);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.persist_consensus(&program, &change))
                .await
                .map_err(|e| format!("the store task failed: {e}"))?
                .map_err(|e| e.to_string())
        })
    }
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
}

impl Driver {
    /// Starts the member `config.me` of a committee of `config.k` from what it persisted (the
    /// default for a fresh member).
    ///
    /// The actor, its timers, executions and validations run in `tasks`: they end when
    /// `tasks` shuts down, or once every `Driver` handle is gone and in-flight work returned.
    pub(crate) fn spawn(
        config: Config,
        persisted: Persisted,
        transport: Arc<dyn Transport>,
        durable: Arc<dyn Durable>,
        executor: Arc<dyn Executor>,
        tasks: Tasks,
    ) -> Driver {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = Actor {
            member: Member::new(config),
            transport,
            durable,
            executor,
            inputs: tx.downgrade(),
            waiting: HashMap::new(),
            epoch: Instant::now(),
            tasks: tasks.clone(),
        };
        tasks.spawn(actor.run(rx, persisted));
        Driver { inputs: tx }
    }

    /// Submits a client call and waits until it is finalized (or fails here).
    pub async fn call(&self, call_id: CallId) -> CallResult {
        let (reply, answer) = oneshot::channel();
        if self.inputs.send(Input::Submit { call_id, reply }).is_err() {
            return CallResult::Failed {
                reason: "the committee driver stopped".into(),
            };
        }
        answer.await.unwrap_or(CallResult::Failed {
            reason: "the committee driver stopped".into(),
        })
    }

    /// A message from committee member `from` (authenticated by the transport).
    pub fn deliver(&self, from: MemberIndex, msg: Message) {
        let _ = self.inputs.send(Input::Event(Event::Message { from, msg }));
    }
}

struct Actor {
    member: Member,
    transport: Arc<dyn Transport>,
    durable: Arc<dyn Durable>,
    executor: Arc<dyn Executor>,
    /// Weak, so the actor ends once every `Driver` handle is gone.
    inputs: mpsc::WeakUnboundedSender<Input>,
    waiting: HashMap<CallId, Vec<oneshot::Sender<CallResult>>>,
    epoch: Instant,
    tasks: Tasks,
}

impl Actor {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>, persisted: Persisted) {
        // The committed state may lag the persisted log (a crash between Persist(Finalized)
        // and Commit): apply the log again (commit is idempotent), then rebuild the member.
        for decision in &persisted.log {
            if let Err(e) = self.executor.clone().commit(decision.clone()).await {
                tracing::error!(
                    height = decision.height,
                    "re-applying a finalized height: {e}"
                );
                return;
            }
        }
        let actions = self
            .member
            .handle(Event::Restart { persisted }, self.now_ms());
        if !self.perform(actions).await {
            return;
        }
        while let Some(input) = rx.recv().await {
            let event = match input {
                Input::Submit { call_id, reply } => {
                    self.waiting.entry(call_id).or_default().push(reply);
                    Event::Submit { call_id }
                }
                Input::Event(event) => event,
            };
            let actions = self.member.handle(event, self.now_ms());
            if !self.perform(actions).await {
                return;
            }
        }
    }

    /// Performs `actions` in order; false when the driver must stop (the store failed: going
    /// on could reveal a vote that is not durable).
    async fn perform(&mut self, actions: Vec<Action>) -> bool {
        for action in actions {
            match action {
                Action::Send { to, msg } => self.transport.send(to, msg),
                Action::Broadcast { msg } => {
                    let me = self.member.config().me;
                    for to in (0..self.member.config().k).filter(|m| *m != me) {
                        self.transport.send(to, msg.clone());
                    }
                }
                Action::Persist(change) => {
                    if let Err(e) = self.durable.persist(change).await {
                        tracing::error!("persisting a consensus vote failed, stopping: {e}");
                        return false;
                    }
                }
                Action::Execute {
                    height,
                    view,
                    call_id,
                } => self.execute(height, view, call_id),
                Action::Validate {
                    height,
                    view,
                    proposal,
                } => self.validate(height, view, proposal),
                Action::Commit(decision) => {
                    if let Err(e) = self.executor.clone().commit(decision).await {
                        tracing::error!("applying a finalized height failed, stopping: {e}");
                        return false;
                    }
                }
                Action::Reply { call_id, result } => {
                    for waiter in self.waiting.remove(&call_id).unwrap_or_default() {
                        let _ = waiter.send(result.clone());
                    }
                }
                Action::SetTimer {
                    height,
                    view,
                    at_ms,
                } => {
                    let wait = at_ms.saturating_sub(self.now_ms());
                    let inputs = self.inputs.clone();
                    self.tasks.spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                        if let Some(inputs) = inputs.upgrade() {
                            let _ = inputs.send(Input::Event(Event::Timer { height, view }));
                        }
                    });
                }
            }
        }
        true
    }

    fn execute(&self, height: Height, view: View, call_id: CallId) {
        let (executor, inputs) = (self.executor.clone(), self.inputs.clone());
        let transport = self.transport.clone();
        let (me, k) = (self.member.config().me, self.member.config().k);
        self.tasks.spawn(async move {
            let event = match executor.execute(height, call_id).await {
                Ok(digest) => Event::Executed {
                    height,
                    view,
                    call_id,
                    digest,
                },
                Err(ExecuteError::Behind) => {
                    // The member stays at `height`, executing, until the decision arrives
                    // (then it proposes the call next) or its view times out.
                    for to in (0..k).filter(|to| *to != me) {
                        transport.send(
                            to,
                            Message::SyncRequest {
                                from_height: height,
                            },
                        );
                    }
                    return;
                }
                Err(ExecuteError::Failed(reason)) => Event::ExecuteFailed {
                    height,
                    view,
                    call_id,
                    reason,
                },
            };
            if let Some(inputs) = inputs.upgrade() {
                let _ = inputs.send(Input::Event(event));
            }
        });
    }

    fn validate(&self, height: Height, view: View, proposal: Proposal) {
        let (executor, inputs) = (self.executor.clone(), self.inputs.clone());
        self.tasks.spawn(async move {
            let ok = executor.validate(height, proposal).await;
            let event = Event::Validated {
                height,
                view,
                digest: proposal.digest,
                ok,
            };
            if let Some(inputs) = inputs.upgrade() {
                let _ = inputs.send(Input::Event(event));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! Four drivers in one process, their votes in real redb stores, over an in-memory network
    //! and with digests standing in for the VM: what the node will run, before `net` and
    //! `programs` implement the transport and the executor.

    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    const K: usize = 4;

    /// The receipt id of `call` at `height` on top of `prev`: deterministic, like re-execution.
    fn receipt(height: Height, call: &CallId, prev: &Digest) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(&height.to_le_bytes()).update(call).update(prev);
        *h.finalize().as_bytes()
    }

    const PROGRAM: onvm_rpc_api::ProgramId = onvm_rpc_api::ProgramId::from_bytes([3; 32]);

    /// A member's node: its votes in a real redb store, its "state" the applied digests.
    struct Node {
        _dir: tempfile::TempDir,
        store: crate::store::Store,
        applied: Mutex<Vec<Digest>>,
        down: AtomicBool,
    }

    impl Node {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = crate::store::Store::open(&dir.path().join("node.redb")).unwrap();
            Node {
                _dir: dir,
                store,
                applied: Mutex::default(),
                down: AtomicBool::new(false),
            }
        }
    }

    struct Net {
        nodes: Vec<Arc<Node>>,
        drivers: Mutex<Vec<Option<Driver>>>,
    }

    struct Link {
        net: Arc<Net>,
        me: MemberIndex,
    }

    impl Transport for Link {
        fn send(&self, to: MemberIndex, msg: Message) {
            if self.net.nodes[self.me].down.load(Ordering::SeqCst)
                || self.net.nodes[to].down.load(Ordering::SeqCst)
            {
                return;
            }
            let driver = self.net.drivers.lock().unwrap()[to].clone();
            if let Some(d) = driver {
                d.deliver(self.me, msg);
            }
        }
    }

    impl Executor for Link {
        fn execute(
            self: Arc<Self>,
            height: Height,
            call_id: CallId,
        ) -> BoxFuture<Result<Digest, ExecuteError>> {
            let applied = self.net.nodes[self.me].applied.lock().unwrap();
            let prev = applied.last().copied().unwrap_or_default();
            let result = if applied.len() as u64 == height {
                Ok(receipt(height, &call_id, &prev))
            } else if applied.len() as u64 > height {
                Err(ExecuteError::Behind)
            } else {
                Err(ExecuteError::Failed(format!(
                    "the state is at height {}",
                    applied.len()
                )))
            };
            Box::pin(async move { result })
        }

        fn validate(self: Arc<Self>, height: Height, proposal: Proposal) -> BoxFuture<bool> {
            let applied = self.net.nodes[self.me].applied.lock().unwrap();
            let prev = applied.last().copied().unwrap_or_default();
            let ok = applied.len() as u64 == height
                && receipt(height, &proposal.call_id, &prev) == proposal.digest;
            Box::pin(async move { ok })
        }

        fn commit(self: Arc<Self>, decision: Decision) -> BoxFuture<Result<(), String>> {
            let mut applied = self.net.nodes[self.me].applied.lock().unwrap();
            if decision.height == applied.len() as u64 {
                applied.push(decision.proposal.digest);
            }
            Box::pin(async { Ok(()) })
        }
    }

    fn start(net: &Arc<Net>, me: MemberIndex, tasks: &Tasks) {
        let link = Arc::new(Link {
            net: net.clone(),
            me,
        });
        let store = net.nodes[me].store.clone();
        let persisted = store.load_consensus(&PROGRAM).unwrap();
        let durable = Arc::new(StoreDurable {
            store,
            program: PROGRAM,
        });
        let driver = Driver::spawn(
            Config::new(K, me, 200),
            persisted,
            link.clone(),
            durable,
            link,
            tasks.clone(),
        );
        net.drivers.lock().unwrap()[me] = Some(driver);
    }

    fn network() -> Arc<Net> {
        network_in(&Tasks::default())
    }

    /// Four members whose tasks all run in `tasks`.
    fn network_in(tasks: &Tasks) -> Arc<Net> {
        let net = Arc::new(Net {
            nodes: (0..K).map(|_| Arc::new(Node::new())).collect(),
            drivers: Mutex::new(vec![None; K]),
        });
        for me in 0..K {
            start(&net, me, tasks);
        }
        net
    }

    fn driver(net: &Net, i: MemberIndex) -> Driver {
        net.drivers.lock().unwrap()[i].clone().unwrap()
    }

    fn call_id(n: u8) -> CallId {
        [n; 32]
    }

    async fn finalized(d: &Driver, call: CallId) -> Height {
        let result = tokio::time::timeout(std::time::Duration::from_secs(30), d.call(call))
            .await
            .expect("the call finalizes in time");
        match result {
            CallResult::Finalized { height, .. } => height,
            other => panic!("{other:?}"),
        }
    }

    /// Waits until every one of `members` applied `heights` heights (a member replies once
    /// it finalized; the others' Commits may still be on their way), then checks they agree.
    async fn logs_agree(net: &Net, members: &[MemberIndex], heights: usize) {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        for &m in members {
            while net.nodes[m].applied.lock().unwrap().len() < heights {
                assert!(
                    Instant::now() < deadline,
                    "member {m} never applied {heights}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let first = net.nodes[members[0]].applied.lock().unwrap().clone();
        for &m in members {
            let log = net.nodes[m].applied.lock().unwrap().clone();
            let common = log.len().min(first.len());
            assert_eq!(log[..common], first[..common], "member {m} disagrees");
        }
    }

    #[tokio::test]
    async fn calls_submitted_at_any_member_finalize_once_in_one_order() {
        let net = network();
        let mut heights = Vec::new();
        for n in 0..8u8 {
            let at = driver(&net, (n as usize) % K);
            heights.push(finalized(&at, call_id(n)).await);
        }
        heights.sort();
        assert_eq!(heights, (0..8).collect::<Vec<_>>(), "each call once");
        // A retry of a finalized call is answered from the log, not run again.
        assert!(finalized(&driver(&net, 2), call_id(3)).await < 8);
        logs_agree(&net, &[0, 1, 2, 3], 8).await;
    }

    #[tokio::test]
    async fn a_dead_leader_is_replaced_by_a_view_change_and_a_restart_resumes_from_its_votes() {
        let net = network();
        assert_eq!(finalized(&driver(&net, 1), call_id(1)).await, 0);
        // Member 0 leads view 0; it goes silent. The others time out, change view, and go on.
        net.nodes[0].down.store(true, Ordering::SeqCst);
        assert_eq!(finalized(&driver(&net, 2), call_id(2)).await, 1);
        assert_eq!(finalized(&driver(&net, 3), call_id(3)).await, 2);
        logs_agree(&net, &[1, 2, 3], 3).await;
        // Member 3 restarts from what its store holds (a crash: its in-memory driver is gone).
        net.drivers.lock().unwrap()[3] = None;
        start(&net, 3, &Tasks::default());
        // Member 0 comes back; everyone catches up and agrees.
        net.nodes[0].down.store(false, Ordering::SeqCst);
        assert_eq!(finalized(&driver(&net, 0), call_id(4)).await, 3);
        logs_agree(&net, &[0, 1, 2, 3], 4).await;
    }

    #[tokio::test]
    async fn a_stopped_committee_ends_its_tasks_and_fails_calls_instead_of_hanging() {
        let tasks = Tasks::default();
        let net = network_in(&tasks);
        assert_eq!(finalized(&driver(&net, 1), call_id(1)).await, 0);
        tasks.shutdown().await;
        assert_eq!(
            tasks.running(),
            0,
            "actors, timers and executions all ended"
        );
        let late = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            driver(&net, 2).call(call_id(2)),
        )
        .await
        .expect("a call to a stopped driver is answered, not left waiting");
        assert!(matches!(late, CallResult::Failed { .. }), "{late:?}");
    }
}
