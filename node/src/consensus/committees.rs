//! PBFT committees on this node: for every program with a committee of more than one whose
//! threshold is the PBFT quorum ([`super::runs_pbft`]) and of which this node is a member,
//! one [`Driver`] runs this node's [`pbft::Member`]. This file is the glue between the pure
//! core and the node: it implements the driver's [`Transport`] over `net`'s committee protocol
//! and its [`Executor`] over [`Programs`], and it answers the clients whose calls it sequences.
//!
//! - A writing call accepted by a member is submitted to its driver; PBFT `Forward`s it to the
//!   current leader with its payload, the leader runs it ([`Programs::run`]) and proposes the
//!   receipt id; members re-execute ([`Programs::check_proposal`]) before they prepare.
//! - A member's `Commit` carries its BLS signature over the receipt id. A finalized height's
//!   `q` signers are aggregated into the receipt's attestation.
//! - The receipt's executor (the leader that ran it) commits it and publishes its DAG node;
//!   the other members apply that node like any replica. A member that decided the height but
//!   sees no DAG node within the view timeout commits it itself (the leader may have crashed).
//! - A client waits for its call's decision at most `committee.attest_timeout_ms`; the call
//!   may still be decided later, and a retry with the same request id finds it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onvm_rpc_api::program::{
    Attestation, ExecuteResult, ExecutionReceipt, ProgramManifest, receipt_signing_message,
};
use onvm_rpc_api::{Hash32, HexBytes, ProgramId};

use super::driver::{BoxFuture, Driver, ExecuteError, Executor, StoreDurable, Transport};
use super::pbft::{self, CallId, CallResult, Decision, Digest, Height, MemberIndex, Message};
use crate::net::{Attachment, CommitteeEnvelope};
use crate::programs::{
    AdmittedCall, AttestError, CallPayload, JobAttempt, ProgramError, Programs, Ran,
};
use onvm_rpc_api::jobs::{AttemptLogs, JobEvent};

/// Interrupted results kept for the `Abandon`s that report them.
const MAX_INTERRUPTED: usize = 256;
/// How long a member waiting for a decided height's DAG node sleeps when nothing reaches its
/// store (it wakes at once when a DAG node is stored): to check its fallback turn and pull.
const APPLY_WAKE: Duration = Duration::from_millis(50);
/// How often it pulls the DAG from the height's executor meanwhile.
const APPLY_PULL: Duration = Duration::from_millis(250);

/// What the committees need from the network: sending envelopes, pulling a peer's DAG.
pub trait CommitteeNet: Send + Sync + 'static {
    fn send(&self, to: Hash32, envelope: Vec<u8>);
    fn sync_from(&self, peer: Hash32) -> BoxFuture<()>;
}

/// Settings of the committees (config `committee.*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// PBFT's view-0 timeout (`committee.view_timeout_ms`).
    pub view_timeout_ms: u64,
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
}

pub struct Committees {
    programs: Programs,
    store: crate::store::Store,
    network_id: String,
    me: Hash32,
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
}

impl Committees {
    pub fn new(
        programs: Programs,
        store: crate::store::Store,
        network_id: String,
        me: Hash32,
        settings: Settings,
        net: Arc<dyn CommitteeNet>,
    ) -> Arc<Self> {
        let committees = Arc::new(Committees {
            programs: programs.clone(),
            store,
            network_id,
            me,
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

    /// This node's member of `program`'s committee, started from its persisted votes on first
    /// use; None when the program is unknown here, or not a PBFT program this node is in.
    async fn member(&self, program: ProgramId) -> Result<Option<Arc<Running>>, ProgramError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&program)
        {
            return Ok(Some(r.clone()));
        }
        let manifest = match self.programs.info(program).await {
            Ok(info) => info.manifest.manifest,
            Err(ProgramError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !super::runs_pbft(&manifest) {
            return Ok(None);
        }
        let Some(me) = manifest
            .committee
            .iter()
            .position(|m| m.endpoint_id == self.me)
        else {
            return Ok(None);
        };
        let store = self.store.clone();
        let persisted = tokio::task::spawn_blocking(move || store.load_consensus(&program))
            .await
            .map_err(|e| ProgramError::Internal(format!("loading votes: {e}")))??;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(&program) {
            return Ok(Some(r.clone()));
        }
        // The store's cache: the same checked keys replicas verify receipts with.
        let verified = self
            .store
            .verified_committee(&manifest)
            .map_err(|e| tracing::warn!(%program, "its committee's keys do not verify: {e}"))
            .ok();
        let exec = Arc::new(ProgramCommittee {
            programs: self.programs.clone(),
            network_id: self.network_id.clone(),
            program,
            k: manifest.committee.len(),
            manifest,
            me,
            net: self.net.clone(),
            fallback: Duration::from_millis(self.settings.view_timeout_ms),
            abandon_own: self.settings.debug_abandon_after_attest,
            partition: self.settings.debug_partition.clone(),
            forge_decisions: self.settings.debug_forge_decisions,
            verified,
            state: Mutex::default(),
        });
        let driver = Driver::spawn(
            pbft::Config::new(exec.k, me, self.settings.view_timeout_ms),
            persisted,
            exec.clone(),
            Arc::new(StoreDurable {
                store: self.store.clone(),
                program,
            }),
            exec.clone(),
            self.tasks.clone(),
        );
        let r = Arc::new(Running { driver, exec });
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
        let decided = tokio::time::timeout(wait, running.driver.call(call_id.0)).await;
        let local = running.exec.take_result(&call_id.0, decided.is_err());
        match decided {
            Err(_) => {
                let silent = running.exec.silent_since(submitted);
                let mut refusals: Vec<String> = silent
                    .iter()
                    .map(|m| format!("{m}: sent no committee message while the call waited (down or unreachable)"))
                    .collect();
                refusals.push(format!(
                    "not decided within committee.attest_timeout_ms ({} ms); it may still be decided: retry with the same request_id to get its receipt",
                    self.settings.call_timeout_ms
                ));
                Err(ProgramError::NotAttested {
                    signed: (running.exec.k - silent.len()) as u32,
                    threshold,
                    refusals,
                })
            }
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
            Ok(CallResult::Failed { reason }) => match local {
                // Interrupted on this node (a timeout, a cancellation): the result says how.
                Some(Ok(result)) if !result.outcome.is_reproducible() => {
                    crate::programs::finish_with(None, result)
                }
                Some(Err(e)) => Err(e),
                // Our own run, proposed but not decided (the committee stopped, or another
                // leader's run may be decided later), is no answer: only a receipt is.
                _ => match self.programs.committed(program, call_id).await? {
                    Some(done) => self.answer(done, None, &call, job).await,
                    None => Err(ProgramError::NotAttested {
                        signed: 0,
                        threshold,
                        refusals: vec![reason],
                    }),
                },
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
            // view change may have committed another leader's run of the same call).
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
    /// on this network, with a valid attachment), then handed to the program's member.
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
        if running
            .exec
            .accept(index, &envelope.message, envelope.attachment)
        {
            running.driver.deliver(index, envelope.message);
        }
    }
}

impl Committees {
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

/// A proposal's body: the receipt (its id is the digest) and the call's input.
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
    bodies: HashMap<Digest, Body>,
    effects: HashMap<Digest, Effects>,
    /// Verified Commit signatures per receipt id and member.
    signatures: HashMap<Digest, BTreeMap<MemberIndex, Vec<u8>>>,
    /// When each member last sent this node a committee message.
    heard: HashMap<MemberIndex, Instant>,
    /// Results of calls this node abandoned as leader, for the `Abandon`s it sends (bounded).
    interrupted: HashMap<CallId, ExecuteResult>,
    /// Verified certificates of decisions heard from peers (their receipt and attestation),
    /// by receipt id: what this node relays to laggards and commits with when it lacks the
    /// individual Commit signatures.
    certificates: HashMap<Digest, (ExecutionReceipt, Attestation)>,
}

/// One program's committee on this node: the driver's transport and executor.
struct ProgramCommittee {
    programs: Programs,
    network_id: String,
    program: ProgramId,
    manifest: ProgramManifest,
    k: usize,
    me: MemberIndex,
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
    /// The committee's keys, checked once, for verifying decision certificates (None if a
    /// key does not verify: no decision from a peer is accepted then).
    verified: Option<Arc<onvm_rpc_api::committee::VerifiedCommittee>>,
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
        if state.calls.len() >= pbft::MAX_PENDING && !state.calls.contains_key(&call_id) {
            return Err(ProgramError::Internal(format!(
                "{} calls of this program are waiting for its committee: retry later",
                pbft::MAX_PENDING
            )));
        }
        state.calls.insert(call_id, payload);
        state.local.insert(call_id);
        if let Some(c) = cancel {
            state.cancels.insert(call_id, c);
        }
        Ok(())
    }

    fn heard_from(&self, member: MemberIndex) {
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
        if !still_pending {
            state.calls.remove(call_id);
        }
        state.results.remove(call_id)
    }

    /// This member's BLS vote for a receipt id: signed once, then kept with the others (a
    /// Commit is sent to every member and retransmitted).
    fn own_signature(&self, digest: &Digest) -> Vec<u8> {
        if let Some(sig) = self
            .state()
            .signatures
            .get(digest)
            .and_then(|s| s.get(&self.me))
        {
            return sig.clone();
        }
        let signature = self
            .programs
            .sign_receipt(&onvm_rpc_api::ReceiptId::from_bytes(*digest));
        self.state()
            .signatures
            .entry(*digest)
            .or_default()
            .insert(self.me, signature.clone());
        signature
    }

    fn signing_message(&self, digest: &Digest) -> Vec<u8> {
        receipt_signing_message(
            &self.network_id,
            &onvm_rpc_api::ReceiptId::from_bytes(*digest),
        )
    }

    /// Checks and keeps what a message from member `from` carries; false drops the message
    /// (a body that is not what the message names, a Commit without a valid signature).
    fn accept(&self, from: MemberIndex, message: &Message, attachment: Attachment) -> bool {
        match (message, attachment) {
            (Message::Commit { digest, .. }, Attachment::CommitSignature { signature }) => {
                let Some(member) = self.manifest.committee.get(from) else {
                    return false;
                };
                let ok = crate::identity::bls_verify(
                    &member.bls_public_key.0,
                    &self.signing_message(digest),
                    &signature.0,
                    crate::identity::BLS_SIG_DST,
                );
                if ok {
                    self.state()
                        .signatures
                        .entry(*digest)
                        .or_default()
                        .insert(from, signature.0);
                }
                ok
            }
            (Message::Commit { .. }, _) => false,
            (
                message,
                Attachment::Proposal {
                    receipt,
                    input_base64,
                },
            ) => {
                let Some(digest) = proposed_digest(message) else {
                    return false;
                };
                let receipt = *receipt;
                let fits = *receipt.id().as_bytes() == digest
                    && receipt.program_id == self.program
                    && Hash32::of(&input_base64.0) == receipt.input_hash;
                if fits {
                    self.state().bodies.insert(
                        digest,
                        Body {
                            receipt,
                            input: input_base64.0,
                        },
                    );
                }
                fits
            }
            (Message::Abandon { call_id, .. }, attachment) => {
                let mut state = self.state();
                if !state.local.contains(call_id) {
                    // The call is over; a copy of its payload forwarded here is not needed
                    // (the member that accepted it keeps its own while its client waits).
                    state.calls.remove(call_id);
                } else if let Attachment::Interrupted { result } = attachment
                    && result.receipt.is_none()
                    && result.program_id == self.program
                    && !result.outcome.is_reproducible()
                {
                    // Only the outcome of an interrupted call (it commits nothing), for the
                    // client waiting here.
                    state.results.insert(*call_id, Ok(*result));
                }
                true
            }
            (Message::Forward { .. }, Attachment::Calls { calls }) => {
                let mut state = self.state();
                for payload in calls {
                    if payload.program_id != self.program || state.calls.len() >= pbft::MAX_PENDING
                    {
                        continue;
                    }
                    if let Some(id) = payload_call_id(&payload) {
                        state.calls.entry(id).or_insert(payload);
                    }
                }
                true
            }
            (
                Message::Decided(d),
                Attachment::Certificate {
                    receipt,
                    signers,
                    signature,
                },
            ) => self.accept_certificate(d, *receipt, signers.0, signature.0),
            // A decision is believed only with its proof: a lone member could otherwise make
            // every member persist a height nobody decided and wait for it forever.
            (Message::Decided(d), _) => {
                self.refuse_decision(d, "it carries no certificate");
                false
            }
            (_, _) => true,
        }
    }

    /// Checks a peer's decision against its certificate: the receipt is the decided digest at
    /// the decided height, for the decided call, run by the named proposer; a threshold of
    /// members signed it. Keeps the certificate on success.
    fn accept_certificate(
        &self,
        d: &Decision,
        receipt: ExecutionReceipt,
        signers: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        let Some(verified) = &self.verified else {
            return false;
        };
        let id = receipt.id();
        let proposer = self.manifest.committee.get(d.proposal.proposer);
        let fits = *id.as_bytes() == d.proposal.digest
            && receipt.program_id == self.program
            && receipt.height == d.height
            && receipt.call_id.0 == d.proposal.call_id
            && proposer.map(|m| m.endpoint_id) == Some(receipt.executor);
        if !fits {
            self.refuse_decision(d, "its receipt is not the decided value");
            return false;
        }
        if let Err(e) = verified.verify_signatures(&id, &signers, &signature, &self.network_id) {
            self.refuse_decision(d, &e.to_string());
            return false;
        }
        let attestation = Attestation {
            epoch: 0,
            signers: HexBytes(signers),
            signature: HexBytes(signature),
        };
        self.state()
            .certificates
            .insert(d.proposal.digest, (receipt, attestation));
        true
    }

    fn refuse_decision(&self, d: &Decision, why: &str) {
        crate::metrics::add(&self.programs.counters().decisions_refused, 1);
        tracing::debug!(program = %self.program, height = d.height, "a decision was refused: {why}");
    }

    /// The proof of a decision this node holds: from the Commit signatures it verified, from
    /// a certificate it was sent, or from the committed receipt in its store.
    fn certificate(&self, d: &Decision) -> Option<(ExecutionReceipt, Attestation)> {
        let digest = d.proposal.digest;
        {
            let state = self.state();
            if let Some(c) = state.certificates.get(&digest) {
                return Some(c.clone());
            }
            if let (Some(body), Some(signatures)) =
                (state.bodies.get(&digest), state.signatures.get(&digest))
                && let Some(attestation) = aggregate(signatures, &d.signers, self.k)
            {
                return Some((body.receipt.clone(), attestation));
            }
        }
        let stored = self
            .programs
            .stored_receipt(&onvm_rpc_api::ReceiptId::from_bytes(digest))?;
        Some((stored.receipt, stored.attestation?))
    }

    /// The attachment a message needs on the wire.
    fn attachment(&self, message: &Message) -> Attachment {
        if let Message::Abandon { call_id, .. } = message {
            return match self.state().interrupted.get(call_id) {
                Some(result) => Attachment::Interrupted {
                    result: Box::new(result.clone()),
                },
                None => Attachment::None,
            };
        }
        if let Message::Commit { digest, .. } = message {
            let signature = self.own_signature(digest);
            return Attachment::CommitSignature {
                signature: HexBytes(signature),
            };
        }
        if let Message::Decided(d) = message {
            return match self.certificate(d) {
                Some((receipt, attestation)) => Attachment::Certificate {
                    receipt: Box::new(receipt),
                    signers: attestation.signers,
                    signature: attestation.signature,
                },
                None => Attachment::None,
            };
        }
        let body = proposed_digest(message).and_then(|d| self.state().bodies.get(&d).cloned());
        match body {
            Some(body) => Attachment::Proposal {
                receipt: Box::new(body.receipt),
                input_base64: body.input.into(),
            },
            None => Attachment::None,
        }
    }

    fn encode(&self, message: Message, attachment: Attachment) -> Option<Vec<u8>> {
        serde_json::to_vec(&CommitteeEnvelope {
            network_id: self.network_id.clone(),
            program_id: self.program,
            message,
            attachment,
        })
        .map_err(|e| tracing::warn!("encoding a committee message: {e}"))
        .ok()
    }

    /// The decided height's parts this node holds: body, effects and the signers' signatures.
    fn decided_parts(&self, decision: &Decision) -> Option<(Body, Attestation, Effects)> {
        let digest = decision.proposal.digest;
        if !self.state().effects.contains_key(&digest) {
            return None;
        }
        // Our own vote is signed again if a restart forgot it.
        if decision.signers.contains(&self.me) {
            self.own_signature(&digest);
        }
        let mut state = self.state();
        let body = state.bodies.get(&digest)?.clone();
        let attestation = state
            .signatures
            .get(&digest)
            .and_then(|signatures| aggregate(signatures, &decision.signers, self.k))
            .or_else(|| state.certificates.get(&digest).map(|(_, a)| a.clone()))?;
        let effects = state.effects.remove(&digest)?;
        Some((body, attestation, effects))
    }

    /// Forgets what heights up to `height` needed.
    fn prune(&self, decision: &Decision) {
        let mut state = self.state();
        let height = decision.height;
        let old: Vec<Digest> = state
            .bodies
            .iter()
            .filter(|(_, b)| b.receipt.height <= height)
            .map(|(d, _)| *d)
            .collect();
        for d in old {
            state.bodies.remove(&d);
            state.effects.remove(&d);
            state.signatures.remove(&d);
        }
        state
            .certificates
            .retain(|_, (receipt, _)| receipt.height > height);
        let call = decision.proposal.call_id;
        state.calls.remove(&call);
        if !state.local.contains(&call) {
            state.results.remove(&call);
        }
        // Signatures for receipts never proposed here (late Commits of other views) are
        // bounded by the views a height can have; drop them when they pile up.
        if state.signatures.len() > 256 {
            let keep: HashSet<Digest> = state.bodies.keys().copied().collect();
            state.signatures.retain(|d, _| keep.contains(d));
        }
    }
}

/// The attestation of `signers`' verified signatures (None if one is missing).
fn aggregate(
    signatures: &BTreeMap<MemberIndex, Vec<u8>>,
    signers: &[MemberIndex],
    k: usize,
) -> Option<Attestation> {
    let mut bitmap = Vec::new();
    let mut sigs: Vec<&[u8]> = Vec::new();
    for signer in signers {
        sigs.push(signatures.get(signer)?);
        onvm_rpc_api::committee::set_signer(&mut bitmap, k, *signer);
    }
    let aggregate = crate::identity::bls_aggregate(&sigs)?;
    Some(Attestation {
        epoch: 0,
        signers: HexBytes(bitmap),
        signature: HexBytes(aggregate.to_vec()),
    })
}

/// The digest a message proposes or carries a body for.
fn proposed_digest(message: &Message) -> Option<Digest> {
    match message {
        Message::PrePrepare { proposal, .. } => Some(proposal.digest),
        Message::NewView {
            proposal: Some(p), ..
        } => Some(p.digest),
        Message::ViewChange(vc) => vc.prepared.as_ref().map(|c| c.proposal.digest),
        _ => None,
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
        let Some(member) = self.manifest.committee.get(to) else {
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
                if let Some(bytes) = self.encode(forward, attachment) {
                    self.net.send(to, bytes);
                }
            }
            return;
        }
        if self.forge_decisions
            && let Some(height) = msg.height()
            && !matches!(msg, Message::Decided(_))
        {
            // The lie: a decision at this height for a call nobody proposed, "signed" by
            // everyone, with no certificate (none can be made without the members' keys).
            let forged = Message::Decided(Decision {
                height,
                proposal: pbft::Proposal {
                    call_id: [0xfd; 32],
                    digest: [0xfd; 32],
                    proposer: self.me,
                },
                signers: (0..self.k).collect(),
            });
            if let Some(bytes) = self.encode(forged, Attachment::None) {
                self.net.send(to, bytes);
            }
        }
        let attachment = self.attachment(&msg);
        if let Some(bytes) = self.encode(msg, attachment) {
            self.net.send(to, bytes);
        }
    }
}

impl Executor for ProgramCommittee {
    fn execute(
        self: Arc<Self>,
        height: Height,
        call_id: CallId,
    ) -> BoxFuture<Result<Digest, ExecuteError>> {
        Box::pin(async move { self.run_as_leader(height, call_id).await })
    }

    fn validate(self: Arc<Self>, height: Height, proposal: pbft::Proposal) -> BoxFuture<bool> {
        Box::pin(async move {
            let Some(body) = self.state().bodies.get(&proposal.digest).cloned() else {
                return false;
            };
            // The digest binds the executor; the proposer the core records must be that
            // member, since it leads the next height.
            let proposer = self.manifest.committee.get(proposal.proposer);
            if body.receipt.height != height
                || body.receipt.call_id.0 != proposal.call_id
                || proposer.map(|m| m.endpoint_id) != Some(body.receipt.executor)
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
                        proposal.digest,
                        Effects {
                            writes: rerun.writes,
                            output: rerun.output,
                        },
                    );
                    true
                }
                Err(e) => {
                    if !matches!(e, AttestError::Behind { .. }) {
                        tracing::info!(program = %self.program, height, "proposal refused: {e}");
                    }
                    false
                }
            }
        })
    }

    fn commit(self: Arc<Self>, decision: Decision) -> BoxFuture<Result<(), String>> {
        Box::pin(async move { self.apply(decision).await })
    }
}

impl ProgramCommittee {
    /// Runs `call_id` at `height` as the leader: the proposal's receipt id, or why it could
    /// not run (kept for the client waiting here).
    async fn run_as_leader(
        self: Arc<Self>,
        height: Height,
        call_id: CallId,
    ) -> Result<Digest, ExecuteError> {
        use ExecuteError::Failed;
        // The state may already hold `height` (applied from the DAG before this member heard
        // the decision): then the call is not at fault and stays pending, payload and all.
        if self.state_is_past(height).await {
            return Err(ExecuteError::Behind);
        }
        let (payload, cancel) = {
            let state = self.state();
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
        if let Ok(Some(done)) = self.programs.committed(self.program, call.call_id).await {
            return Err(Failed(format!(
                "the call was already committed (receipt {})",
                done.receipt.id
            )));
        }
        match self.programs.run(&call, Some(height), cancel).await {
            Ok(Ran::Proposed(p)) => {
                let p = *p;
                let digest = *p.body.id().as_bytes();
                let mut state = self.state();
                state.bodies.insert(
                    digest,
                    Body {
                        receipt: p.body,
                        input: p.input,
                    },
                );
                state.effects.insert(
                    digest,
                    Effects {
                        writes: p.writes,
                        output: p.output,
                    },
                );
                if state.local.contains(&call_id) {
                    state.results.insert(call_id, Ok(p.result));
                }
                Ok(digest)
            }
            Ok(Ran::Interrupted(result)) => {
                let result = *result;
                let reason = format!(
                    "the call was interrupted on the leader ({}): nothing was committed, retry",
                    crate::programs::describe(&result.outcome)
                );
                self.keep_failure(call_id, Ok(result));
                Err(Failed(reason))
            }
            // The state moved past `height` while the call ran (a commit from the DAG).
            Err(_) if self.state_is_past(height).await => Err(ExecuteError::Behind),
            Err(e) => Err(Failed(self.keep_failure(call_id, Err(e)))),
        }
    }

    /// True if the program's state already holds `height`.
    async fn state_is_past(&self, height: Height) -> bool {
        self.programs
            .height(self.program)
            .await
            .is_ok_and(|applied| applied > height)
    }

    /// Keeps why a call did not run for the client waiting here; returns the reason.
    fn keep_failure(&self, call_id: CallId, result: Result<ExecuteResult, ProgramError>) -> String {
        let reason = match &result {
            Ok(r) => crate::programs::describe(&r.outcome),
            Err(e) => e.to_string(),
        };
        let mut state = self.state();
        // The leader abandons the call: nothing keeps its payload any more.
        state.calls.remove(&call_id);
        if let Ok(r) = &result {
            if state.interrupted.len() >= MAX_INTERRUPTED {
                state.interrupted.clear();
            }
            state.interrupted.insert(call_id, r.clone());
        }
        if state.local.contains(&call_id) {
            state.results.insert(call_id, result);
        }
        reason
    }

    /// Applies a decided height (idempotent): nothing when the store already has it; else the
    /// receipt's executor commits it, and the other members wait for its DAG node, pulling
    /// meanwhile, and commit it themselves after `fallback` if they hold its parts.
    async fn apply(&self, decision: Decision) -> Result<(), String> {
        let started = Instant::now();
        let mut last_pull: Option<Instant> = None;
        let mut warned = false;
        // Subscribed before the first look at the height, so no commit falls between the two.
        let mut changes = self.programs.dag_changes();
        loop {
            let applied = self
                .programs
                .height(self.program)
                .await
                .map_err(|e| e.to_string())?;
            if applied > decision.height {
                self.prune(&decision);
                return Ok(());
            }
            let executor = self
                .state()
                .bodies
                .get(&decision.proposal.digest)
                .map(|b| b.receipt.executor);
            // The executor commits at once; the others in turn after it, one fallback period
            // apart, so one DAG node is published, not one per member.
            let turn = executor
                .and_then(|e| {
                    self.manifest
                        .committee
                        .iter()
                        .position(|m| m.endpoint_id == e)
                })
                .map(|e| (self.me + self.k - e) % self.k)
                .unwrap_or(1);
            let due = if turn == 0 && !self.abandon_own {
                Duration::ZERO
            } else {
                self.fallback * turn.max(1) as u32
            };
            if applied == decision.height
                && started.elapsed() >= due
                && let Some((body, attestation, effects)) = self.decided_parts(&decision)
            {
                match self
                    .programs
                    .commit_decided(
                        body.receipt,
                        effects.writes,
                        body.input,
                        effects.output,
                        attestation,
                    )
                    .await
                {
                    Ok(_) => {
                        self.prune(&decision);
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
            if last_pull.is_none_or(|t| t.elapsed() >= APPLY_PULL) {
                last_pull = Some(Instant::now());
                let from = executor.unwrap_or_else(|| {
                    self.manifest.committee[decision.proposal.proposer % self.k].endpoint_id
                });
                let net = self.net.clone();
                net.sync_from(from).await;
            }
            if !warned && started.elapsed() > Duration::from_secs(10) {
                warned = true;
                tracing::warn!(program = %self.program, height = decision.height, "a decided height has not reached this node's store yet: still pulling");
            }
            match tokio::time::timeout(APPLY_WAKE, changes.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The store is gone (shutting down): do not spin on a closed channel.
                Ok(Err(_)) => tokio::time::sleep(APPLY_WAKE).await,
            }
        }
    }
}
