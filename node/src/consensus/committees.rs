//! Committees on this node: for every program with a committee of more than one of which this
//! node is a member, one Tendermint [`Driver`] runs this node's member. This file is the glue
//! between the pure core and the node: it implements the driver's [`Transport`] over `net`'s
//! committee protocol, its [`Durable`] over the store and its [`Executor`] over [`Programs`],
//! and it answers the clients whose calls it sequences.
//!
//! - A writing call accepted by a member is submitted to its driver; the sequencer `Forward`s
//!   it to the round's leader with its payload; the leader runs it ([`Programs::run`]) and
//!   proposes the value (call id, receipt id, itself); members re-execute it
//!   ([`Programs::check_proposal`]) before they prevote for it.
//! - Precommits are BLS signatures over the vote's bytes (network, program, height, round,
//!   value id); the decision's precommits of one round are aggregated into the receipt's
//!   attestation, which names that round.
//! - The receipt's executor (the member that ran it) commits it and publishes its DAG node;
//!   the other members apply that node like any replica. A member that decided the height but
//!   sees no DAG node within its turn commits it itself (the executor may have crashed).
//! - A client waits for its call's decision at most `committee.attest_timeout_ms`; the call
//!   may still be decided later, and a retry with the same request id finds it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onvm_rpc_api::program::{Attestation, ExecuteResult, ExecutionReceipt, ProgramManifest};
use onvm_rpc_api::{Hash32, HexBytes, ProgramId};

use super::tendermint::driver::{BoxFuture, Driver, Durable, ExecuteError, Executor, Transport};
use super::tendermint::keys::{CommitteeKeys, MemberKeys};
use super::tendermint::sequencer::{
    CallId, CallResult, Decided, MAX_PENDING, Message, ReceiptId, SYNC_BATCH, SequencerConfig,
};
use super::tendermint::{
    AggregateCertificate, Committee, Domain, Height, MemberIndex, Misbehavior, NilOrVal, Signature,
    SignedVote, Signing, TimeoutConfig, Value, ValueId, VoteType, WalEntry, proposal_message,
    verify_commit_certificate, vote_message,
};
use crate::net::{Attachment, CommitteeEnvelope};
use crate::programs::{
    AdmittedCall, AttestError, CallPayload, JobAttempt, ProgramError, Programs, Ran,
};
use onvm_rpc_api::committee::{Equivocation, SignedBytes};
use onvm_rpc_api::jobs::{AttemptLogs, JobEvent};

/// How long a member waiting for a decided height's DAG node sleeps when nothing reaches its
/// store (it wakes at once when a DAG node is stored): to check its fallback turn and pull.
const APPLY_WAKE: Duration = Duration::from_millis(50);
/// How often it pulls the DAG from the height's executor meanwhile (gossip normally brings it
/// first).
const APPLY_PULL: Duration = Duration::from_millis(250);
/// Shortest time between two starts of a program's member after it stopped (a failed write):
/// the disk gets time to recover, and a full disk costs one log reload per period.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How often a member waiting for a job's call checks whether the job was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// What the committees need from the network: sending envelopes, pulling a peer's DAG.
pub trait CommitteeNet: Send + Sync + 'static {
    fn send(&self, to: Hash32, envelope: Vec<u8>);
    fn sync_from(&self, peer: Hash32) -> BoxFuture<()>;
}

/// Settings of the committees (config `committee.*`, `vm.max_call_ms`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The propose timeout of round 0 (`committee.view_timeout_ms`): how long members wait
    /// for a leader before they move to the next round, and so how long a dead or paused
    /// leader stalls its program.
    pub view_timeout_ms: u64,
    /// The longest call (`vm.max_call_ms`): later rounds' propose timeouts grow by half of it
    /// each, so a legitimately slow call decides after a few rounds.
    pub max_call_ms: u64,
    /// How long a client waits for its call's decision (`committee.attest_timeout_ms`).
    pub call_timeout_ms: u64,
    /// Test hook `committee.debug_abandon_after_attest`: as the executor of a decided call,
    /// this node neither commits it nor answers its client, as if it crashed at that instant.
    pub debug_abandon_after_attest: bool,
    /// Test hook `committee.debug_partition`: members this node exchanges no message with.
    pub debug_partition: HashSet<Hash32>,
    /// Test hook `committee.debug_forge_decisions`: a lying member that sends made-up
    /// decisions with every message.
    pub debug_forge_decisions: bool,
    /// Test hook `committee.debug_equivocate`: a lying member that signs two values per vote.
    pub debug_equivocate: bool,
    /// Test hook `committee.debug_censor`: a lying leader that never runs forwarded calls.
    pub debug_censor: bool,
}

impl Settings {
    /// The consensus timeouts ([`TimeoutConfig::new`]).
    pub fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::new(self.view_timeout_ms, self.max_call_ms)
    }
}

pub struct Committees {
    programs: Programs,
    store: crate::store::Store,
    network_id: String,
    me: Hash32,
    identity: Arc<crate::identity::Identity>,
    settings: Settings,
    net: Arc<dyn CommitteeNet>,
    running: Mutex<HashMap<ProgramId, Arc<Running>>>,
    stopped: AtomicBool,
    /// Every driver's actor, timers, executions and validations, ended at shutdown.
    tasks: crate::util::Tasks,
}

struct Running {
    driver: Driver,
    exec: Arc<ProgramCommittee>,
    started: Instant,
}

impl Committees {
    pub fn new(
        programs: Programs,
        store: crate::store::Store,
        network_id: String,
        identity: Arc<crate::identity::Identity>,
        settings: Settings,
        net: Arc<dyn CommitteeNet>,
    ) -> Arc<Self> {
        let committees = Arc::new(Committees {
            programs: programs.clone(),
            store,
            network_id,
            me: Hash32(*identity.endpoint_id().as_bytes()),
            identity,
            settings,
            net,
            running: Mutex::default(),
            stopped: AtomicBool::new(false),
            tasks: crate::util::Tasks::default(),
        });
        programs.set_committees(&committees);
        committees
    }

    /// Stops every driver, its timers and in-flight executions, and waits until they ended.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.tasks.shutdown().await;
    }

    /// Programs whose committee runs on this node now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// This node's member of `program`'s committee, started from its log on first use (and
    /// again after it stopped, e.g. on a failed write once the disk is back); None when the
    /// program is unknown here, has a committee of one, or this node is not in it.
    async fn member(&self, program: ProgramId) -> Result<Option<Arc<Running>>, ProgramError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(None);
        }
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = running.get(&program) {
                match r.driver.stopped() {
                    None => return Ok(Some(r.clone())),
                    // At most one restart per RESTART_BACKOFF: on a disk that is still full,
                    // every message would otherwise reload the log and re-check the keys.
                    Some(_) if r.started.elapsed() < RESTART_BACKOFF => return Ok(Some(r.clone())),
                    Some(why) => {
                        tracing::warn!(%program, "committee member stopped ({why}): restarting it from its log");
                        running.remove(&program);
                    }
                }
            }
        }
        let manifest = match self.programs.info(program).await {
            Ok(info) => info.manifest.manifest,
            Err(ProgramError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !super::runs_consensus(&manifest) {
            return Ok(None);
        }
        let Some(me) = manifest
            .committee
            .iter()
            .position(|m| m.endpoint_id == self.me)
        else {
            return Ok(None);
        };
        let keys = CommitteeKeys::new(&manifest.committee).map_err(|e| {
            ProgramError::Internal(format!("{program}'s committee keys do not verify: {e}"))
        })?;
        let store = self.store.clone();
        let log = tokio::task::spawn_blocking(move || store.consensus_load(&program))
            .await
            .map_err(|e| ProgramError::Internal(format!("loading the consensus log: {e}")))??;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(&program) {
            return Ok(Some(r.clone()));
        }
        let k = manifest.committee.len();
        let exec = Arc::new(ProgramCommittee {
            programs: self.programs.clone(),
            store: self.store.clone(),
            network_id: self.network_id.clone(),
            program,
            k,
            manifest,
            me,
            net: self.net.clone(),
            fallback: Duration::from_millis(self.settings.view_timeout_ms),
            abandon_own: self.settings.debug_abandon_after_attest,
            partition: self.settings.debug_partition.clone(),
            forge_decisions: self.settings.debug_forge_decisions,
            equivocate: self.settings.debug_equivocate,
            censor: self.settings.debug_censor,
            signing: MemberKeys::new(keys.clone(), self.identity.clone()),
            keys: keys.clone(),
            domain: Domain {
                network: self.network_id.clone(),
                program: *program.as_bytes(),
            },
            state: Mutex::default(),
        });
        let domain = exec.domain.clone();
        let config = SequencerConfig::with_timeouts(
            domain,
            k as u32,
            MemberIndex(me as u32),
            self.settings.timeouts(),
        );
        let driver = Driver::spawn(
            config,
            exec.signing.clone(),
            log.wal,
            log.last,
            exec.clone(),
            Arc::new(StoreDurable {
                store: self.store.clone(),
                program,
            }),
            exec.clone(),
            self.tasks.clone(),
        )
        .map_err(|e| {
            ProgramError::Internal(format!("starting {program}'s committee member: {e}"))
        })?;
        let r = Arc::new(Running {
            driver,
            exec,
            started: Instant::now(),
        });
        running.insert(program, r.clone());
        tracing::debug!(%program, member = me, "committee member started");
        Ok(Some(r))
    }

    /// Sequences an admitted writing call through the committee and answers it once it is
    /// decided (with its logs when this node ran it).
    pub async fn execute(
        &self,
        call: AdmittedCall,
        job: Option<JobAttempt>,
    ) -> Result<(ExecuteResult, Option<JobEvent>), ProgramError> {
        let program = call.payload.program_id;
        let call_id = call.call_id;
        if let Some(done) = self.programs.committed(program, call_id).await? {
            return self.answer(done, None, &call, job).await;
        }
        let running = self.member(program).await?.ok_or_else(|| {
            ProgramError::Internal(format!(
                "this node does not run {program}'s committee (not a member)"
            ))
        })?;
        let threshold = super::quorum::quorum(running.exec.k) as u32;
        running.exec.register(
            call_id.0,
            call.payload.clone(),
            job.as_ref().map(|j| j.cancel.clone()),
        )?;
        let wait = Duration::from_millis(self.settings.call_timeout_ms);
        let submitted = Instant::now();
        let interrupted = running.exec.interrupted(&call_id.0);
        // A job cancelled here may be running on another member (the round's leader): tell
        // everyone, then keep waiting for the outcome.
        let cancel = job.as_ref().map(|j| j.cancel.clone());
        let exec = running.exec.clone();
        let watch_cancel = async move {
            if let Some(flag) = cancel {
                while !flag.load(Ordering::SeqCst) {
                    tokio::time::sleep(CANCEL_POLL).await;
                }
                exec.broadcast_cancel(call_id.0);
            }
            std::future::pending::<()>().await
        };
        let decided = tokio::select! {
            // Never: the watch ends in `pending()`.
            () = watch_cancel => Ok(CallResult::Unknown { reason: "stopped waiting".into() }),
            decided = tokio::time::timeout(wait, running.driver.call(call_id.0)) => decided,
            // The leader this node forwarded the call to could not finish it (a timeout, a
            // cancellation): its outcome is the answer. The call stays pending in the
            // committee: a later leader that finishes it commits it, and a retry with the
            // same request id then finds the receipt.
            _ = interrupted.notified() => {
                if let Some(Ok(result)) = running.exec.take_result(&call_id.0, true) {
                    return crate::programs::finish_with(None, result);
                }
                Ok(CallResult::Unknown { reason: "the leader's notice was lost".into() })
            }
        };
        let still_pending = !matches!(
            decided,
            Ok(CallResult::Finalized { .. } | CallResult::Failed { .. })
        );
        let local = running.exec.take_result(&call_id.0, still_pending);
        let not_decided = |reason: String| {
            let silent = running.exec.silent_since(submitted);
            let mut refusals: Vec<String> = silent
                .iter()
                .map(|m| {
                    format!(
                        "{m}: sent no committee message while the call waited (down or unreachable)"
                    )
                })
                .collect();
            refusals.push(reason);
            ProgramError::NotAttested {
                signed: (running.exec.k - silent.len()) as u32,
                threshold,
                refusals,
            }
        };
        match decided {
            Err(_) => Err(not_decided(format!(
                "not decided within committee.attest_timeout_ms ({} ms); it may still be decided: retry with the same request_id to get its receipt",
                self.settings.call_timeout_ms
            ))),
            Ok(CallResult::Unknown { reason }) => Err(not_decided(format!(
                "{reason}; it may still be decided: retry with the same request_id to get its receipt"
            ))),
            Ok(CallResult::Finalized { .. }) if self.settings.debug_abandon_after_attest => {
                Err(ProgramError::Internal(
                    "committee.debug_abandon_after_attest: the call was decided and dropped".into(),
                ))
            }
            Ok(CallResult::Finalized { .. }) => {
                let done = self
                    .programs
                    .committed(program, call_id)
                    .await?
                    .ok_or_else(|| {
                        ProgramError::Internal("a decided call is missing from the store".into())
                    })?;
                self.answer(done, local.and_then(|r| r.ok()), &call, job)
                    .await
            }
            // Nobody but this member ever knew the call: it can never be decided.
            Ok(CallResult::Failed { reason }) => match local {
                // Interrupted on this node (a timeout, a cancellation): the result says how.
                Some(Ok(result)) if !result.outcome.is_reproducible() => {
                    crate::programs::finish_with(None, result)
                }
                Some(Err(e)) => Err(e),
                _ => Err(ProgramError::NotAttested {
                    signed: 0,
                    threshold,
                    refusals: vec![format!("{reason}: nothing was committed, retry")],
                }),
            },
        }
    }

    /// The answer to a decided call: this node's own result (with logs) when it ran the call,
    /// else the committed one; a job attempt's job is completed here.
    async fn answer(
        &self,
        done: crate::store::CommittedCall,
        ran_here: Option<ExecuteResult>,
        call: &AdmittedCall,
        job: Option<JobAttempt>,
    ) -> Result<(ExecuteResult, Option<JobEvent>), ProgramError> {
        let receipt = done.receipt.clone();
        let output = done.output.clone();
        let (result, _) = match ran_here {
            // Our own run is the answer only if it is the execution that was committed (a
            // later round may have committed another leader's run of the same call).
            Some(mut result)
                if result.outcome == receipt.receipt.outcome
                    && result.state_root_in == receipt.receipt.state_root_in
                    && result.fuel_used == receipt.receipt.fuel_used
                    && Hash32::of(&result.output_base64.0) == receipt.receipt.output_hash =>
            {
                result.state_root_out = receipt.receipt.state_root_out;
                result.receipt = Some(receipt.clone());
                (result, None)
            }
            _ => match crate::programs::answer_committed(
                done,
                call.request_id.clone(),
                &call.input_hash,
                &call.entrypoint,
            ) {
                Ok(answer) => answer,
                Err(ProgramError::ExecutionFailed(result)) => (*result, None),
                Err(e) => return Err(e),
            },
        };
        let event = match job {
            Some(job) if result.outcome.is_ok() => {
                let logs = AttemptLogs {
                    attempt: job.job.attempt,
                    lines: result.logs.clone(),
                    truncated: result.logs_truncated,
                };
                self.programs
                    .complete_job(job, &receipt, output, Some(logs))
                    .await?
            }
            _ => None,
        };
        crate::programs::finish_with(event, result)
    }

    /// A committee message from `from`: decoded, checked (a member of the program's committee,
    /// on this network, with an attachment that is what the message names), then handed to
    /// the program's member, which verifies every signature and certificate.
    pub async fn receive(&self, from: iroh::EndpointId, bytes: Vec<u8>) {
        let envelope: CommitteeEnvelope = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(%from, "malformed committee message: {e}");
                return;
            }
        };
        if envelope.network_id != self.network_id {
            return;
        }
        let message = match envelope.message.as_ref().map(|m| Message::decode(&m.0)) {
            Some(Ok(m)) => Some(m),
            None => None,
            Some(Err(e)) => {
                tracing::debug!(%from, "malformed committee message: {e}");
                return;
            }
        };
        let sender = Hash32(*from.as_bytes());
        if self.settings.debug_partition.contains(&sender) {
            return;
        }
        let program = envelope.program_id;
        let mut running = self.member(program).await;
        if matches!(running, Ok(None))
            && self.programs.info(program).await.is_err()
            && self.is_announced(sender).await
        {
            // A call right after a deploy: the member pulls the program from the sender (only
            // from a node of this network, so a stranger naming made-up programs costs a read,
            // not a DAG pull).
            self.net.sync_from(sender).await;
            running = self.member(program).await;
        }
        let running = match running {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%program, "committee message dropped: {e}");
                return;
            }
        };
        let Some(index) = running
            .exec
            .manifest
            .committee
            .iter()
            .position(|m| m.endpoint_id == sender)
        else {
            tracing::debug!(%from, %program, "committee message from a non-member dropped");
            return;
        };
        if index == running.exec.me {
            return;
        }
        running.exec.heard_from(index);
        match message {
            Some(message) => {
                if running.exec.accept(index, &message, envelope.attachment) {
                    running.driver.deliver(MemberIndex(index as u32), message);
                }
            }
            None => match envelope.attachment {
                Attachment::Interrupted { call_id, result } => {
                    running.exec.on_interrupted(call_id.0, *result)
                }
                Attachment::Cancel { call_id } => running.exec.on_cancel(index, call_id.0),
                _ => {}
            },
        }
    }

    async fn is_announced(&self, node: Hash32) -> bool {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.is_announced(&node))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
    }
}

/// The network's handler for committee envelopes (weak: the network outlives nothing here).
pub struct CommitteeInbox(pub std::sync::Weak<Committees>);

impl crate::net::CommitteeHandler for CommitteeInbox {
    fn receive(
        &self,
        from: iroh::EndpointId,
        envelope: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let committees = self.0.upgrade();
        Box::pin(async move {
            if let Some(c) = committees {
                c.receive(from, envelope).await;
            }
        })
    }
}

/// The member's log and decisions in the node's store.
struct StoreDurable {
    store: crate::store::Store,
    program: ProgramId,
}

impl StoreDurable {
    /// Runs `write` on the blocking pool; its error says what `what` was.
    fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        write: impl FnOnce(&crate::store::Store, &ProgramId) -> Result<T, crate::store::StoreError>
        + Send
        + 'static,
    ) -> BoxFuture<Result<T, String>> {
        let (store, program) = (self.store.clone(), self.program);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || write(&store, &program))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{what}: {e}"))
        })
    }
}

impl Durable for StoreDurable {
    fn append(&self, entry: WalEntry) -> BoxFuture<Result<(), String>> {
        self.blocking("writing the consensus log", move |store, program| {
            store.consensus_append(program, &entry)
        })
    }

    fn decide(&self, decided: Decided) -> BoxFuture<Result<(), String>> {
        self.blocking("storing a decision", move |store, program| {
            store.consensus_decide(program, &decided)
        })
    }

    fn decisions(&self, from: Height, until: Height) -> BoxFuture<Vec<Decided>> {
        let program = self.program;
        let read = self.blocking("reading decisions", move |store, program| {
            store.consensus_decisions(program, from, until, SYNC_BATCH as usize)
        });
        Box::pin(async move {
            read.await
                .map_err(|e| tracing::warn!(%program, "{e}"))
                .unwrap_or_default()
        })
    }
}

/// A proposal's body: the receipt (its id is the value's receipt id) and the call's input.
#[derive(Clone)]
struct Body {
    receipt: ExecutionReceipt,
    input: Vec<u8>,
}

/// What applying a proposal needs besides its body, from running or re-running it.
struct Effects {
    writes: onvm_rpc_api::program::Writes,
    output: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Payloads of calls submitted here or forwarded to this member.
    calls: HashMap<CallId, CallPayload>,
    cancels: HashMap<CallId, Arc<AtomicBool>>,
    /// Calls a client of this node waits for.
    local: HashSet<CallId>,
    /// This node's results for calls it ran as leader (with logs), or why they did not run.
    results: HashMap<CallId, Result<ExecuteResult, ProgramError>>,
    bodies: HashMap<ReceiptId, Body>,
    effects: HashMap<ReceiptId, Effects>,
    /// When each member last sent this node a committee message.
    heard: HashMap<usize, Instant>,
    /// Which member forwarded each call this node holds from another member (told when this
    /// node, as leader, could not finish the call).
    forwarded_by: HashMap<CallId, usize>,
    /// Woken when a leader reports a local client's call interrupted.
    interruptions: HashMap<CallId, Arc<tokio::sync::Notify>>,
}

/// One program's committee on this node: the driver's transport and executor.
struct ProgramCommittee {
    programs: Programs,
    /// Where evidence against members is kept.
    store: crate::store::Store,
    network_id: String,
    program: ProgramId,
    manifest: ProgramManifest,
    k: usize,
    me: usize,
    net: Arc<dyn CommitteeNet>,
    /// How long a member that decided a height waits for the executor's DAG node before it
    /// commits the height itself.
    fallback: Duration,
    /// `committee.debug_abandon_after_attest`.
    abandon_own: bool,
    /// `committee.debug_partition`.
    partition: HashSet<Hash32>,
    /// `committee.debug_forge_decisions`.
    forge_decisions: bool,
    /// `committee.debug_equivocate`.
    equivocate: bool,
    /// `committee.debug_censor`.
    censor: bool,
    /// This member's signing key (the driver's; the liar hooks sign with it too).
    signing: MemberKeys,
    /// The committee's keys (proofs of possession checked) and where its signatures are
    /// valid: what decisions from peers are checked against.
    keys: CommitteeKeys,
    domain: Domain,
    state: Mutex<State>,
}

impl ProgramCommittee {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(
        &self,
        call_id: CallId,
        payload: CallPayload,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<(), ProgramError> {
        let mut state = self.state();
        if state.calls.len() >= MAX_PENDING && !state.calls.contains_key(&call_id) {
            return Err(ProgramError::Internal(format!(
                "{MAX_PENDING} calls of this program are waiting for its committee: retry later"
            )));
        }
        state.calls.insert(call_id, payload);
        state.local.insert(call_id);
        state.interruptions.entry(call_id).or_default();
        if let Some(c) = cancel {
            state.cancels.insert(call_id, c);
        }
        Ok(())
    }

    /// Wakes when a leader reports `call_id` interrupted (see [`Self::on_interrupted`]).
    fn interrupted(&self, call_id: &CallId) -> Arc<tokio::sync::Notify> {
        self.state()
            .interruptions
            .entry(*call_id)
            .or_default()
            .clone()
    }

    /// A leader's notice that its run of a call this node forwarded was interrupted: the
    /// outcome (no receipt) for the client waiting here. Anything else is dropped.
    fn on_interrupted(&self, call_id: CallId, result: ExecuteResult) {
        let mut state = self.state();
        let fits = state.local.contains(&call_id)
            && result.program_id == self.program
            && result.receipt.is_none()
            && !result.outcome.is_reproducible();
        if !fits || state.results.contains_key(&call_id) {
            return;
        }
        state.results.insert(call_id, Ok(result));
        if let Some(wake) = state.interruptions.get(&call_id) {
            wake.notify_one();
        }
    }

    fn heard_from(&self, member: usize) {
        self.state().heard.insert(member, Instant::now());
    }

    /// The other members that sent nothing since `since`.
    fn silent_since(&self, since: Instant) -> Vec<Hash32> {
        let state = self.state();
        (0..self.k)
            .filter(|m| *m != self.me)
            .filter(|m| state.heard.get(m).is_none_or(|t| *t < since))
            .map(|m| self.manifest.committee[m].endpoint_id)
            .collect()
    }

    /// This node's result for a call its client stopped waiting for. Unless the call is still
    /// pending (the wait timed out), its payload goes too.
    fn take_result(
        &self,
        call_id: &CallId,
        still_pending: bool,
    ) -> Option<Result<ExecuteResult, ProgramError>> {
        let mut state = self.state();
        state.local.remove(call_id);
        state.cancels.remove(call_id);
        state.interruptions.remove(call_id);
        if !still_pending {
            state.calls.remove(call_id);
        }
        state.results.remove(call_id)
    }

    /// Checks and keeps what a message carries; false drops the message (a body that is not
    /// what the proposal names).
    fn accept(&self, from: usize, message: &Message, attachment: Attachment) -> bool {
        match (message, attachment) {
            (
                Message::Consensus(super::tendermint::Message::Proposal(p)),
                Attachment::Proposal {
                    receipt,
                    input_base64,
                },
            ) => {
                let receipt = *receipt;
                let value = &p.message.value;
                let fits = *receipt.id().as_bytes() == value.receipt_id
                    && receipt.call_id.0 == value.call_id
                    && receipt.program_id == self.program
                    && Hash32::of(&input_base64.0) == receipt.input_hash;
                if fits {
                    let mut state = self.state();
                    // Bodies are dropped as heights are applied; a flood of bodies for heights
                    // far ahead is bounded like the pending calls.
                    if state.bodies.len() < MAX_PENDING {
                        state.bodies.insert(
                            value.receipt_id,
                            Body {
                                receipt,
                                input: input_base64.0,
                            },
                        );
                    }
                }
                fits
            }
            (Message::Forward { .. }, Attachment::Calls { calls }) => {
                let mut state = self.state();
                for payload in calls {
                    if payload.program_id != self.program || state.calls.len() >= MAX_PENDING {
                        continue;
                    }
                    if let Some(id) = payload_call_id(&payload) {
                        state.calls.entry(id).or_insert(payload);
                        state.forwarded_by.entry(id).or_insert(from);
                        state.cancels.entry(id).or_default();
                    }
                }
                true
            }
            (Message::Decision(d), Attachment::None) => self.check_decision(d),
            (
                _,
                Attachment::Calls { .. }
                | Attachment::Proposal { .. }
                | Attachment::Interrupted { .. }
                | Attachment::Cancel { .. },
            ) => false,
            (_, Attachment::None) => true,
        }
    }

    /// A peer's decision is only worth its certificate: a quorum of this committee's
    /// precommits of one round for exactly this value at this height. The sequencer checks it
    /// again before adopting it; checking here first counts the refusals (`decisions_refused`).
    fn check_decision(&self, d: &Decided) -> bool {
        let c = &d.certificate;
        let why = if c.height != d.height.0 || c.value_id != d.value.id() {
            "its certificate is for another height or value".to_string()
        } else {
            match Committee::new(self.k as u32) {
                Some(committee) => {
                    match verify_commit_certificate(&self.keys, &committee, &self.domain, c) {
                        Ok(()) => return true,
                        Err(e) => e.to_string(),
                    }
                }
                None => "the committee size is invalid".to_string(),
            }
        };
        crate::metrics::add(&self.programs.counters().decisions_refused, 1);
        tracing::debug!(program = %self.program, height = d.height.0, "a decision was refused: {why}");
        false
    }

    /// An envelope's bytes: a message with its attachment, or (no message) a notice.
    fn encode(&self, message: Option<&Message>, attachment: Attachment) -> Option<Vec<u8>> {
        serde_json::to_vec(&CommitteeEnvelope {
            network_id: self.network_id.clone(),
            program_id: self.program,
            message: message.map(|m| HexBytes(m.encode())),
            attachment,
        })
        .map_err(|e| tracing::warn!(program = %self.program, "encoding a committee message: {e}"))
        .ok()
    }

    /// The attachment a message needs: a proposal's body.
    fn attachment(&self, message: &Message) -> Attachment {
        let Message::Consensus(super::tendermint::Message::Proposal(p)) = message else {
            return Attachment::None;
        };
        match self.state().bodies.get(&p.message.value.receipt_id) {
            Some(body) => Attachment::Proposal {
                receipt: Box::new(body.receipt.clone()),
                input_base64: onvm_rpc_api::types::Base64Bytes(body.input.clone()),
            },
            None => Attachment::None,
        }
    }

    /// The parts a decided height needs to be committed by this member, if it has them all.
    fn decided_parts(&self, decided: &Decided) -> Option<(Body, Effects)> {
        let mut state = self.state();
        let body = state.bodies.get(&decided.value.receipt_id)?.clone();
        let effects = state.effects.remove(&decided.value.receipt_id)?;
        Some((body, effects))
    }

    /// Forgets what heights up to `height` needed.
    fn prune(&self, decided: &Decided) {
        let mut state = self.state();
        let height = decided.height.0;
        let old: Vec<ReceiptId> = state
            .bodies
            .iter()
            .filter(|(_, b)| b.receipt.height <= height)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            state.bodies.remove(&id);
            state.effects.remove(&id);
        }
        let call = decided.value.call_id;
        state.calls.remove(&call);
        state.forwarded_by.remove(&call);
        if !state.local.contains(&call) {
            state.cancels.remove(&call);
        }
        // Calls given up on without a decision leave their notes behind: drop those of calls
        // this node no longer holds once they pile up.
        if state.forwarded_by.len() > MAX_PENDING || state.cancels.len() > MAX_PENDING {
            let held: HashSet<CallId> = state.calls.keys().copied().collect();
            state.forwarded_by.retain(|c, _| held.contains(c));
            state.cancels.retain(|c, _| held.contains(c));
        }
        if !state.local.contains(&call) {
            state.results.remove(&call);
        }
    }
}

/// The receipt's attestation: the decision's aggregated precommits of one round.
fn attestation(certificate: &AggregateCertificate) -> Attestation {
    Attestation {
        epoch: 0,
        round: certificate.round,
        signers: HexBytes(certificate.signers.clone()),
        signature: HexBytes(certificate.signature.clone()),
    }
}

/// The call id a payload's call will have (the leader admits it again before running it).
fn payload_call_id(payload: &CallPayload) -> Option<CallId> {
    let caller = payload
        .options
        .signed
        .as_ref()
        .map(|s| s.caller)
        .unwrap_or(Hash32::ZERO);
    let request_id = match &payload.job {
        Some(job) => onvm_rpc_api::jobs::attempt_request_id(&job.job_id, job.attempt),
        None => payload.options.request_id.clone()?,
    };
    Some(onvm_rpc_api::program::call_id(&payload.program_id, &caller, &request_id).0)
}

impl Transport for ProgramCommittee {
    fn send(&self, to: MemberIndex, msg: Message) {
        let to_index = to;
        let Some(member) = self.manifest.committee.get(to.0 as usize) else {
            return;
        };
        let to = member.endpoint_id;
        if self.partition.contains(&to) {
            return;
        }
        if let Message::Forward { call_ids } = &msg {
            // One envelope per call, so a batch of large inputs never exceeds the frame limit.
            for id in call_ids {
                let payload = self.state().calls.get(id).cloned();
                let attachment = match payload {
                    Some(p) => Attachment::Calls { calls: vec![p] },
                    None => Attachment::None,
                };
                let forward = Message::Forward {
                    call_ids: vec![*id],
                };
                if let Some(bytes) = self.encode(Some(&forward), attachment) {
                    self.net.send(to, bytes);
                }
            }
            return;
        }
        if self.forge_decisions
            && let Message::Consensus(consensus) = &msg
        {
            // The lie: a decision at this height for a call nobody proposed, "signed" by
            // everyone, with a made-up aggregate (none can be made without the keys).
            let height = consensus.height();
            let value = Value {
                call_id: [0xfd; 32],
                receipt_id: [0xfd; 32],
                proposer: MemberIndex(self.me as u32),
            };
            let forged = Message::Decision(Decided {
                height,
                value,
                certificate: AggregateCertificate {
                    height: height.0,
                    round: 0,
                    value_id: value.id(),
                    signers: vec![0xff; self.k.div_ceil(8)],
                    signature: vec![0xab; 48],
                },
            });
            if let Some(bytes) = self.encode(Some(&forged), Attachment::None) {
                self.net.send(to, bytes);
            }
        }
        let lie = match &msg {
            // `committee.debug_equivocate`: odd members get each vote twice, the second time
            // for another value (so they hold both: evidence).
            Message::Consensus(super::tendermint::Message::Vote(vote))
                if self.equivocate && to_index.0 % 2 == 1 =>
            {
                Some(Message::Consensus(super::tendermint::Message::Vote(
                    self.conflicting(vote.clone()),
                )))
            }
            _ => None,
        };
        for msg in std::iter::once(msg).chain(lie) {
            let attachment = self.attachment(&msg);
            if let Some(bytes) = self.encode(Some(&msg), attachment) {
                self.net.send(to, bytes);
            }
        }
    }
}

impl ProgramCommittee {
    /// `committee.debug_equivocate`: the same vote for another value (or, for a nil vote, for
    /// a made-up value), validly signed by this member.
    fn conflicting(&self, vote: SignedVote) -> SignedVote {
        let mut lie = vote.message.clone();
        let other = match &lie.value {
            NilOrVal::Val(id) => *blake3::hash(&id.0).as_bytes(),
            NilOrVal::Nil => [0xee; 32],
        };
        lie.value = NilOrVal::Val(ValueId(other));
        let signature = self.signing.sign(&vote_message(&self.domain, &lie));
        SignedVote::new(lie, Signature(signature))
    }
}

impl Executor for ProgramCommittee {
    fn execute(
        self: Arc<Self>,
        height: Height,
        call_id: CallId,
    ) -> BoxFuture<Result<ReceiptId, ExecuteError>> {
        Box::pin(async move { self.run_as_leader(height.0, call_id).await })
    }

    fn validate(self: Arc<Self>, height: Height, value: Value) -> BoxFuture<bool> {
        Box::pin(async move {
            let Some(body) = self.state().bodies.get(&value.receipt_id).cloned() else {
                return false;
            };
            // The value names the member that executed the call: it must be the receipt's
            // executor (receipt verifiers find the executor's index the same way).
            let proposer = self.manifest.committee.get(value.proposer.0 as usize);
            if body.receipt.height != height.0
                || body.receipt.call_id.0 != value.call_id
                || proposer.map(|m| m.endpoint_id) != Some(body.receipt.executor)
            {
                return false;
            }
            // Exactly once: a call the store committed is never a value again.
            if let Ok(Some(_)) = self
                .programs
                .committed(self.program, Hash32(value.call_id))
                .await
            {
                return false;
            }
            match self
                .programs
                .check_proposal(&body.receipt, body.input)
                .await
            {
                Ok(rerun) => {
                    self.state().effects.insert(
                        value.receipt_id,
                        Effects {
                            writes: rerun.writes,
                            output: rerun.output,
                        },
                    );
                    true
                }
                Err(e) => {
                    if !matches!(e, AttestError::Behind { .. }) {
                        tracing::info!(program = %self.program, height = height.0, "proposal refused: {e}");
                    }
                    false
                }
            }
        })
    }

    fn commit(self: Arc<Self>, decided: Decided) -> BoxFuture<Result<(), String>> {
        Box::pin(async move { self.apply(decided).await })
    }

    fn evidence(&self, evidence: Vec<Misbehavior>) {
        let records: Vec<Equivocation> = evidence
            .iter()
            .filter_map(|m| self.equivocation(m))
            .collect();
        if records.is_empty() {
            return;
        }
        for r in &records {
            tracing::warn!(program = %self.program, height = r.height, round = r.round, member = %r.member, "a committee member signed two {}s", r.what);
        }
        let (store, program) = (self.store.clone(), self.program);
        // Best effort and off the driver's path: evidence is kept, never waited for.
        tokio::task::spawn_blocking(move || {
            for r in &records {
                if let Err(e) = store.record_equivocation(&program, r) {
                    tracing::warn!(%program, "recording an equivocation: {e}");
                }
            }
        });
    }
}

impl ProgramCommittee {
    /// The wire form of a member's two conflicting signed messages.
    fn equivocation(&self, m: &Misbehavior) -> Option<Equivocation> {
        let signed = |message: Vec<u8>, signature: &Signature| SignedBytes {
            message: HexBytes(message),
            signature: HexBytes(signature.0.clone()),
        };
        let (height, round, what, member, first, second) = match m {
            Misbehavior::DoubleVote(a, b) => (
                a.message.height,
                a.message.round,
                match a.message.vote_type {
                    VoteType::Prevote => "prevote",
                    VoteType::Precommit => "precommit",
                },
                a.message.voter,
                signed(vote_message(&self.domain, &a.message), &a.signature),
                signed(vote_message(&self.domain, &b.message), &b.signature),
            ),
            Misbehavior::DoubleProposal(a, b) => (
                a.message.height,
                a.message.round,
                "proposal",
                a.message.proposer,
                signed(proposal_message(&self.domain, &a.message), &a.signature),
                signed(proposal_message(&self.domain, &b.message), &b.signature),
            ),
        };
        Some(Equivocation {
            height: height.0,
            round: round.as_u32()?,
            what: what.into(),
            member_index: member.0,
            member: self.manifest.committee.get(member.0 as usize)?.endpoint_id,
            first,
            second,
            recorded_at_ms: crate::util::now_ms(),
        })
    }
}

impl ProgramCommittee {
    /// Runs `call_id` at `height` as the leader: the proposal's receipt id, or why it could
    /// not run (kept for the client waiting here).
    async fn run_as_leader(
        self: Arc<Self>,
        height: u64,
        call_id: CallId,
    ) -> Result<ReceiptId, ExecuteError> {
        use ExecuteError::Failed;
        // The state may already hold `height` (applied from the DAG before this member heard
        // the decision): then the call is not at fault and stays pending, payload and all.
        if self.state_is_past(height).await {
            return Err(ExecuteError::Behind);
        }
        if let Ok(Some(done)) = self.programs.committed(self.program, Hash32(call_id)).await {
            return Err(ExecuteError::Committed {
                height: Height(done.receipt.receipt.height),
                receipt_id: *done.receipt.id.as_bytes(),
            });
        }
        let (payload, cancel) = {
            let state = self.state();
            if self.censor && !state.local.contains(&call_id) {
                // `committee.debug_censor`: a lying leader sits on other members' calls.
                return Err(Failed("censored".into()));
            }
            (
                state.calls.get(&call_id).cloned(),
                state.cancels.get(&call_id).cloned(),
            )
        };
        let payload = payload
            .ok_or_else(|| Failed("the leader has not received this call's payload".into()))?;
        let call = match self.programs.admit(payload).await {
            Ok(call) => call,
            Err(e) => return Err(Failed(self.keep_failure(call_id, Err(e)))),
        };
        if call.call_id.0 != call_id {
            return Err(Failed("the payload does not make this call id".into()));
        }
        match self.programs.run(&call, Some(height), cancel).await {
            Ok(Ran::Proposed(p)) => {
                let p = *p;
                let id = *p.body.id().as_bytes();
                let mut state = self.state();
                state.bodies.insert(
                    id,
                    Body {
                        receipt: p.body,
                        input: p.input,
                    },
                );
                state.effects.insert(
                    id,
                    Effects {
                        writes: p.writes,
                        output: p.output,
                    },
                );
                if state.local.contains(&call_id) {
                    state.results.insert(call_id, Ok(p.result));
                }
                Ok(id)
            }
            Ok(Ran::Interrupted(result)) => {
                let result = *result;
                let reason = format!(
                    "the call was interrupted on the leader ({})",
                    crate::programs::describe(&result.outcome)
                );
                self.tell_forwarder(call_id, &result);
                // A client waiting here learns it now: the call is known to every member (it
                // was forwarded to all), so the sequencer never answers it `Failed`.
                self.on_interrupted(call_id, result.clone());
                self.keep_failure(call_id, Ok(result));
                Err(Failed(reason))
            }
            // The state moved past `height` while the call ran (a commit from the DAG).
            Err(_) if self.state_is_past(height).await => Err(ExecuteError::Behind),
            Err(e) => Err(Failed(self.keep_failure(call_id, Err(e)))),
        }
    }

    /// A member's notice that its client cancelled `call_id`: a run here stops as cancelled.
    fn on_cancel(&self, from: usize, call_id: CallId) {
        let state = self.state();
        if state.forwarded_by.get(&call_id) == Some(&from)
            && let Some(flag) = state.cancels.get(&call_id)
        {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Tells every other member that this node's client cancelled `call_id`.
    fn broadcast_cancel(&self, call_id: CallId) {
        let notice = Attachment::Cancel {
            call_id: Hash32(call_id),
        };
        let Some(bytes) = self.encode(None, notice) else {
            return;
        };
        for (i, m) in self.manifest.committee.iter().enumerate() {
            if i != self.me && !self.partition.contains(&m.endpoint_id) {
                self.net.send(m.endpoint_id, bytes.clone());
            }
        }
    }

    /// Tells the member that forwarded `call_id` here that this run of it was interrupted.
    fn tell_forwarder(&self, call_id: CallId, result: &ExecuteResult) {
        let Some(member) = self.state().forwarded_by.get(&call_id).copied() else {
            return;
        };
        let Some(to) = self.manifest.committee.get(member).map(|m| m.endpoint_id) else {
            return;
        };
        if self.partition.contains(&to) {
            return;
        }
        let notice = Attachment::Interrupted {
            call_id: Hash32(call_id),
            result: Box::new(result.clone()),
        };
        if let Some(bytes) = self.encode(None, notice) {
            self.net.send(to, bytes);
        }
    }

    /// True if the program's state already holds `height`.
    async fn state_is_past(&self, height: u64) -> bool {
        self.programs
            .height(self.program)
            .await
            .is_ok_and(|applied| applied > height)
    }

    /// Keeps why a call did not run for the client waiting here; returns the reason. The
    /// payload stays: the sequencer retries a call that failed for a local reason.
    fn keep_failure(&self, call_id: CallId, result: Result<ExecuteResult, ProgramError>) -> String {
        let reason = match &result {
            Ok(r) => crate::programs::describe(&r.outcome),
            Err(e) => e.to_string(),
        };
        let mut state = self.state();
        if state.local.contains(&call_id) {
            state.results.insert(call_id, result);
        }
        reason
    }

    /// Applies a decided height (idempotent): nothing when the store already has it; else the
    /// receipt's executor commits it, and the other members wait for its DAG node, pulling
    /// meanwhile, and commit it themselves after their turn if they hold its parts.
    async fn apply(&self, decided: Decided) -> Result<(), String> {
        let started = Instant::now();
        // Gossip normally brings the DAG node within milliseconds: the first pull waits a
        // pull period, so a decided height costs no DAG round trip on the hot path.
        let mut last_pull = Instant::now();
        let mut warned = false;
        let height = decided.height.0;
        // Subscribed before the first look at the height, so no commit falls between the two.
        let mut changes = self.programs.dag_changes();
        loop {
            let applied = self
                .programs
                .height(self.program)
                .await
                .map_err(|e| e.to_string())?;
            if applied > height {
                self.prune(&decided);
                return Ok(());
            }
            // The executor commits at once; the others in turn after it, one fallback period
            // apart, so one DAG node is published, not one per member.
            let executor = decided.value.proposer.0 as usize;
            let turn = (self.me + self.k - executor % self.k) % self.k;
            let due = if turn == 0 && !self.abandon_own {
                Duration::ZERO
            } else {
                self.fallback * turn.max(1) as u32
            };
            if applied == height
                && started.elapsed() >= due
                && let Some((body, effects)) = self.decided_parts(&decided)
            {
                match self
                    .programs
                    .commit_decided(
                        body.receipt,
                        effects.writes,
                        body.input,
                        effects.output,
                        attestation(&decided.certificate),
                    )
                    .await
                {
                    Ok(_) => {
                        self.prune(&decided);
                        return Ok(());
                    }
                    // Replication applied it meanwhile: the next round sees it.
                    Err(ProgramError::Store(
                        crate::store::StoreError::HeightRace { .. }
                        | crate::store::StoreError::CallCommitted { .. },
                    )) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if last_pull.elapsed() >= APPLY_PULL {
                last_pull = Instant::now();
                let from = self.manifest.committee[executor % self.k].endpoint_id;
                self.net.sync_from(from).await;
            }
            if !warned && started.elapsed() > Duration::from_secs(10) {
                warned = true;
                tracing::warn!(program = %self.program, height, "a decided height has not reached this node's store yet: still pulling");
            }
            match tokio::time::timeout(APPLY_WAKE, changes.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The store is gone (shutting down): do not spin on a closed channel.
                Ok(Err(_)) => tokio::time::sleep(APPLY_WAKE).await,
            }
        }
    }
}
