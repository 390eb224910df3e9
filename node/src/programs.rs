//! Programs on one node: deploy (validate, store the code as a blob, sign the manifest),
//! execute (sequence calls per program, run them in the VM, commit writes and a signed receipt
//! atomically), and read state, proofs and receipts. On a single node the node is the program's
//! committee of one; the consensus issue replaces the sequencing here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onvm_rpc_api::program::{
    ABI_VERSION, Attestation, DeployRequest, DeployResult, ExecuteOptions, ExecuteResult,
    ExecutionReceipt, MAX_REQUEST_ID_BYTES, Outcome, ProgramInfo, ProgramManifest, ProgramPage,
    ReceiptPage, SignedManifest, SignedReceipt, StateProof, StateValue, call_seed, program_id,
    receipt_signing_message, write_digest,
};
use onvm_rpc_api::smt::EMPTY;
use onvm_rpc_api::{BlobId, Hash32, HexBytes, ProgramId, ReceiptId};
use tokio::sync::Semaphore;

use crate::blobs::{BlobError, Blobs};
use crate::config::CommitteeConfig;
use crate::identity::Identity;
use crate::metrics::{self, Counters};
use crate::store::{
    CallEffects, CommittedCall, JobCommit, ProgramRecord, StateSnapshot, Store, StoreError,
};
use crate::util::now_ms;
use crate::vm::{
    CallContext, CallRequest, CallResult, Compiled, ENGINE_FINGERPRINT, StateView, Vm, VmError,
};
use onvm_rpc_api::JobId;
use onvm_rpc_api::caller::{CallerError, CallerProof, JobAttemptProof};
use onvm_rpc_api::committee::Member;
use onvm_rpc_api::dag::DataRef;
use onvm_rpc_api::jobs::{AttemptLogs, JobEvent, JobInfo};

const DEFAULT_ENTRYPOINT: &str = "onvm_main";
const MAX_ENTRYPOINTS: usize = 16;
const MAX_SALT_LEN: usize = 256;
const MAX_BLOB_REFS: usize = 64;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("program {0} not found")]
    NotFound(ProgramId),
    #[error("receipt {0} not found")]
    ReceiptNotFound(ReceiptId),
    #[error("program {program} is sequenced by node {home}: writing calls are forwarded there")]
    NotHome { program: ProgramId, home: Hash32 },
    #[error("invalid program: {0}")]
    InvalidProgram(#[from] VmError),
    #[error(
        "the committee did not attest the call: {signed} of {threshold} signatures ({})",
        refusals.join("; ")
    )]
    NotAttested {
        signed: u32,
        threshold: u32,
        refusals: Vec<String>,
    },
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// The call's caller was refused: a signature that does not verify, an expired request, or
    /// an anonymous call to a program that requires signed calls.
    #[error("{message}")]
    CallerRefused { kind: &'static str, message: String },
    #[error(
        "request id `{request_id}` was already committed (receipt {receipt}) with a different input or entrypoint"
    )]
    RequestConflict {
        request_id: String,
        receipt: ReceiptId,
    },
    #[error("{what} of {size} bytes exceeds the limit of {max} ({key})")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
        key: &'static str,
    },
    /// The call ran and failed; its receipt (if any) is in the result.
    #[error("execution failed: {}", describe(&.0.outcome))]
    ExecutionFailed(Box<ExecuteResult>),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A one-line description of an outcome.
pub fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Trap { kind, message } => format!("trap ({kind}): {message}"),
        Outcome::OutOfFuel => "out of fuel".into(),
        Outcome::MemoryLimit => "memory limit reached".into(),
        Outcome::StackOverflow => "stack overflow".into(),
        Outcome::Timeout => "wall-clock timeout".into(),
        Outcome::BadOutput { message } => format!("bad output: {message}"),
        Outcome::Rejected { message } => format!("rejected: {message}"),
        Outcome::Cancelled => "cancelled".into(),
    }
}

/// The blobs a program may read, by id.
type BlobRefs = Arc<HashMap<BlobId, Arc<Vec<u8>>>>;

/// Adapts a store snapshot to what the VM reads.
struct SnapshotView(StateSnapshot);

impl StateView for SnapshotView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(|e| e.to_string())
    }
    fn next_key(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
        self.0.next_key(prefix, after).map_err(|e| e.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProgramError> + Send + 'static,
) -> Result<T, ProgramError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProgramError::Internal(format!("blocking task failed: {e}")))?
}

#[derive(Clone)]
pub struct Programs {
    store: Store,
    blobs: Blobs,
    vm: Arc<Vm>,
    identity: Arc<Identity>,
    network_id: String,
    /// One sequencer lock per program: calls to a program commit in order.
    sequencers: Arc<Mutex<HashMap<ProgramId, Arc<tokio::sync::Mutex<()>>>>>,
    /// Bounds running calls to the VM's instance pool.
    slots: Arc<Semaphore>,
    /// Declared blobs of recently called programs.
    refs_cache: Arc<Mutex<HashMap<ProgramId, BlobRefs>>>,
    counters: Arc<Counters>,
    committee: CommitteeConfig,
    /// The PBFT committees this node is a member of (installed at start; weak, since the
    /// committees hold this `Programs` to execute and commit).
    committees: Arc<std::sync::OnceLock<std::sync::Weak<crate::consensus::Committees>>>,
}

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A fresh request id for a writing call that came without one.
pub fn fresh_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A proposed call re-run by this node: its own receipt, writes and output.
pub struct Reexecuted {
    pub computed: ExecutionReceipt,
    pub writes: onvm_rpc_api::program::Writes,
    pub output: Vec<u8>,
}

/// Why a member did not sign.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("this replica is at height {have}, the proposal is for height {want}")]
    Behind { have: u64, want: u64 },
    #[error("refused: {0}")]
    Refused(String),
    #[error("re-execution disagrees: this node computed receipt {}", .0.id())]
    Mismatch(Box<ExecutionReceipt>),
    #[error(transparent)]
    Program(#[from] ProgramError),
}

impl Programs {
    pub fn new(
        store: Store,
        blobs: Blobs,
        vm: Arc<Vm>,
        identity: Arc<Identity>,
        network_id: String,
        counters: Arc<Counters>,
        committee: CommitteeConfig,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(vm.limits().max_concurrent_calls as usize));
        Self {
            store,
            blobs,
            vm,
            identity,
            network_id,
            sequencers: Arc::default(),
            slots,
            refs_cache: Arc::default(),
            counters,
            committee,
            committees: Arc::default(),
        }
    }

    pub async fn deploy(&self, req: DeployRequest) -> Result<DeployResult, ProgramError> {
        let limits = self.vm.limits().clone();
        if req.salt.len() > MAX_SALT_LEN {
            return Err(ProgramError::BadRequest(format!(
                "salt is longer than {MAX_SALT_LEN} bytes"
            )));
        }
        let wasm = match (req.wasm_base64, req.code_blob) {
            (Some(w), None) => w.0,
            (None, Some(blob)) => {
                let stat = self.blobs.stat(blob).await?;
                if stat.size > limits.max_module_bytes {
                    return Err(ProgramError::TooLarge {
                        what: "module",
                        size: stat.size,
                        max: limits.max_module_bytes,
                        key: "vm.max_module_bytes",
                    });
                }
                self.blobs.read_all(blob).await?
            }
            _ => {
                return Err(ProgramError::BadRequest(
                    "give exactly one of wasm_base64 and code_blob".into(),
                ));
            }
        };
        let mut entrypoints = vec![
            req.entrypoint
                .unwrap_or_else(|| DEFAULT_ENTRYPOINT.to_string()),
        ];
        for e in req.extra_entrypoints {
            if !entrypoints.contains(&e) {
                entrypoints.push(e);
            }
        }
        if entrypoints.len() > MAX_ENTRYPOINTS {
            return Err(ProgramError::BadRequest(format!(
                "at most {MAX_ENTRYPOINTS} entrypoints"
            )));
        }
        if req.blob_refs.len() > MAX_BLOB_REFS {
            return Err(ProgramError::BadRequest(format!(
                "at most {MAX_BLOB_REFS} blob_refs"
            )));
        }
        let mut refs_total = 0u64;
        for r in &req.blob_refs {
            refs_total += self.blobs.stat(*r).await?.size;
        }
        if refs_total > limits.max_blob_refs_bytes {
            return Err(ProgramError::TooLarge {
                what: "blob_refs",
                size: refs_total,
                max: limits.max_blob_refs_bytes,
                key: "vm.max_blob_refs_bytes",
            });
        }
        // Validate and compile before storing anything.
        let vm = self.vm.clone();
        let (wasm, eps, compiled) = blocking(move || {
            let compiled = vm.compile(&wasm, &entrypoints)?;
            Ok((wasm, entrypoints, compiled))
        })
        .await?;
        let code_size = wasm.len() as u64;
        let code = self
            .blobs
            .add(wasm, Some("application/wasm".into()))
            .await?
            .id;
        let deployer = Hash32(*self.identity.endpoint_id().as_bytes());
        let id = program_id(&deployer, &code, &req.salt);
        self.vm.insert_compiled(code, Arc::new(compiled));
        if let Some(existing) = self.load(&id).await? {
            return Ok(DeployResult {
                program_id: id,
                created: false,
                manifest: existing.manifest,
            });
        }
        // The committee is chosen inside the transaction that records the deploy, from the
        // nodes announced below the DAG node that records it, which replicas recompute.
        let size = req.committee_size.unwrap_or(self.committee.default_size);
        let max = self.committee.max_size;
        if size == 0 || size > max {
            return Err(ProgramError::BadRequest(format!(
                "committee_size must be 1..={max} (committee.max_size)"
            )));
        }
        let me = Member {
            endpoint_id: deployer,
            bls_public_key: HexBytes(self.identity.bls_public_key().to_vec()),
            proof_of_possession: HexBytes(self.identity.bls_proof_of_possession().to_vec()),
        };
        let identity = self.identity.clone();
        let network_id = self.network_id.clone();
        let (salt, blob_refs, wanted_threshold) = (req.salt, req.blob_refs, req.threshold);
        let require_signed_calls = req.require_signed_calls;
        let store = self.store.clone();
        let (record, created) = blocking(move || {
            store.insert_program_with(&id, |context| {
                let committee = onvm_rpc_api::committee::select(
                    &me,
                    context.deploy_nonce,
                    &context.candidates,
                    size as usize,
                );
                let threshold = wanted_threshold
                    .unwrap_or_else(|| onvm_rpc_api::committee::default_threshold(committee.len()));
                onvm_rpc_api::committee::check_threshold(committee.len(), threshold)
                    .map_err(ProgramError::BadRequest)?;
                let mut candidates: Vec<Hash32> =
                    context.candidates.iter().map(|m| m.endpoint_id).collect();
                candidates.sort();
                candidates.dedup();
                let manifest = ProgramManifest {
                    version: 1,
                    network_id,
                    program_id: id,
                    code,
                    code_size,
                    salt,
                    entrypoints: eps,
                    blob_refs,
                    abi_version: ABI_VERSION,
                    engine: ENGINE_FINGERPRINT.to_string(),
                    initial_state_root: EMPTY,
                    deployer,
                    deployed_at_ms: now_ms(),
                    committee,
                    threshold,
                    deploy_nonce: context.deploy_nonce,
                    candidates,
                    require_signed_calls,
                };
                let signature =
                    HexBytes(identity.ed25519_sign(&manifest.signing_message()).to_vec());
                Ok(SignedManifest {
                    manifest,
                    signature,
                })
            })
        })
        .await?;
        if created {
            metrics::add(&self.counters.programs_deployed, 1);
        }
        Ok(DeployResult {
            program_id: id,
            created,
            manifest: record.manifest,
        })
    }

    /// The network this node's programs belong to (signatures are bound to it).
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    /// A committee member's check of a proposal: the proposer, caller, input, network,
    /// engine and limits, then a re-execution from the same state root that must compute the
    /// identical receipt (a disagreement is stored as evidence). Returns the re-run's writes
    /// and output, which the member applies if the proposal is decided.
    pub async fn check_proposal(
        &self,
        proposed: &ExecutionReceipt,
        input: Vec<u8>,
    ) -> Result<Reexecuted, AttestError> {
        let id = proposed.program_id;
        let me = Hash32(*self.identity.endpoint_id().as_bytes());
        let record = self.require(&id).await?;
        let manifest = record.manifest.manifest.clone();
        if !manifest.committee.iter().any(|m| m.endpoint_id == me) {
            return Err(AttestError::Refused(format!(
                "this node is not in {id}'s committee"
            )));
        }
        // Any member may propose (the home, or a member taking over while it is down): votes
        // are per height, so two proposals for one height can never both reach a threshold.
        if !manifest
            .committee
            .iter()
            .any(|m| m.endpoint_id == proposed.executor)
        {
            return Err(AttestError::Refused(
                "the proposer is not a member of the committee".into(),
            ));
        }
        if Hash32::of(&input) != proposed.input_hash {
            return Err(AttestError::Refused(
                "the input does not match input_hash".into(),
            ));
        }
        if proposed.network_id != self.network_id || proposed.engine != ENGINE_FINGERPRINT {
            return Err(AttestError::Refused(format!(
                "network `{}` / engine `{}` differ from this node's",
                proposed.network_id, proposed.engine
            )));
        }
        if !manifest.entrypoints.contains(&proposed.entrypoint) {
            return Err(AttestError::Refused("unknown entrypoint".into()));
        }
        if proposed.fuel_limit > self.vm.limits().max_fuel {
            return Err(AttestError::Refused(
                "fuel over this node's vm.max_fuel".into(),
            ));
        }
        // The caller's signature binds what the sequencer proposes to what the caller asked for:
        // a member never attests a call nobody signed for, or one replayed under a new id.
        if let Err(e) = onvm_rpc_api::caller::verify_caller(proposed) {
            return Err(AttestError::Refused(format!("caller: {e}")));
        }
        if manifest.require_signed_calls && proposed.caller == Hash32::ZERO {
            return Err(AttestError::Refused(
                "the program requires signed calls and this one is anonymous".into(),
            ));
        }
        if !proposed.outcome.is_reproducible() {
            return Err(AttestError::Refused(format!(
                "outcome `{}` is local to the node that ran the call and is never attested",
                proposed.outcome.kind()
            )));
        }
        let rerun = self.reexecute(&manifest, proposed, input).await?;
        if !rerun.computed.outcome.is_reproducible() {
            // This node could not finish the re-run (too slow, or out of instances): that is
            // not evidence against the proposer, only a missing vote.
            return Err(AttestError::Refused(format!(
                "re-execution stopped early on this node ({})",
                describe(&rerun.computed.outcome)
            )));
        }
        let receipt_id = proposed.id();
        if rerun.computed.id() != receipt_id {
            metrics::add(&self.counters.attestations_refused, 1);
            let evidence = crate::store::Evidence::Disagreement {
                height: proposed.height,
                proposed: Box::new(proposed.clone()),
                computed: Box::new(rerun.computed.clone()),
                recorded_at_ms: now_ms(),
            };
            let store = self.store.clone();
            let height = proposed.height;
            blocking(move || Ok(store.record_evidence(&id, height, &evidence)?)).await?;
            tracing::warn!(program = %id, height, "refused to sign: re-execution disagrees");
            return Err(AttestError::Mismatch(Box::new(rerun.computed)));
        }
        Ok(rerun)
    }

    /// Re-runs a proposed call with the receipt's context (the seed derived here, not taken
    /// from the proposal) against this node's state, which must be at the proposal's height
    /// and root; returns the receipt this node computes, with the writes and output.
    async fn reexecute(
        &self,
        manifest: &ProgramManifest,
        proposed: &ExecutionReceipt,
        input: Vec<u8>,
    ) -> Result<Reexecuted, AttestError> {
        let id = manifest.program_id;
        let limits = self.vm.limits().clone();
        let compiled = self.compiled_for(manifest).await?;
        let blobs = self.load_blob_refs(manifest).await?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ProgramError::Internal("the VM is shutting down".into()))?;
        let store = self.store.clone();
        let (record, snapshot) = blocking(move || Ok(store.snapshot(&id)?)).await?;
        if record.height < proposed.height {
            return Err(AttestError::Behind {
                have: record.height,
                want: proposed.height,
            });
        }
        if record.height > proposed.height || record.state_root != proposed.state_root_in {
            return Err(AttestError::Refused(format!(
                "this replica is at height {} root {}, the proposal starts at height {} root {}",
                record.height, record.state_root, proposed.height, proposed.state_root_in
            )));
        }
        let seed = call_seed(
            &id,
            proposed.height,
            &proposed.state_root_in,
            &proposed.input_hash,
        );
        let context = CallContext {
            height: proposed.height,
            timestamp_ms: proposed.timestamp_ms,
            seed,
            caller: proposed.caller,
            state_root_in: proposed.state_root_in,
        };
        let request = CallRequest {
            entrypoint: proposed.entrypoint.clone(),
            input,
            fuel: proposed.fuel_limit,
            timeout: Duration::from_millis(limits.max_call_ms),
            read_only: false,
            context,
            blobs,
            cancel: None,
        };
        let result = self.run_in_vm(compiled, request, snapshot).await?;
        let preview = self.store.clone();
        let writes = result.writes;
        let digest = write_digest(writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
        let proposed_writes = writes.clone();
        let root_out = blocking(move || Ok(preview.preview_root(&id, &proposed_writes)?)).await;
        let mut computed = proposed.clone();
        computed.write_digest = digest;
        computed.seed = seed;
        computed.state_root_out = root_out?;
        computed.output_hash = Hash32::of(&result.output);
        computed.output_len = result.output.len() as u64;
        computed.fuel_used = result.fuel_used;
        computed.outcome = result.outcome;
        if self.committee.debug_corrupt_results {
            computed.output_hash = Hash32([0xee; 32]);
        }
        Ok(Reexecuted {
            computed,
            writes,
            output: result.output,
        })
    }

    /// Compiles `manifest`'s module ahead of its first call if this node is one of its
    /// committee members (the module cache keeps it).
    pub async fn prepare_member(&self, manifest: &ProgramManifest) -> Result<(), ProgramError> {
        let me = Hash32(*self.identity.endpoint_id().as_bytes());
        if manifest.committee.len() > 1 && manifest.committee.iter().any(|m| m.endpoint_id == me) {
            self.compiled_for(manifest).await?;
        }
        Ok(())
    }

    /// Commits a call: its writes, receipt (signed here, with the committee's attestation if
    /// any), input and output, and for a job attempt the job's completion, in one transaction.
    async fn commit(
        &self,
        body: ExecutionReceipt,
        writes: onvm_rpc_api::program::Writes,
        input: Vec<u8>,
        output: Vec<u8>,
        attestation: Option<Attestation>,
        job_commit: Option<JobCommit>,
    ) -> Result<(SignedReceipt, Option<JobEvent>), ProgramError> {
        // Replicas need the writes: small sets ride inside the DAG node, large ones as a blob
        // stored before the commit that names it; the same for inputs and outputs.
        let encoded_writes = onvm_rpc_api::program::encode_writes(&writes);
        for data in [&encoded_writes, &input, &output] {
            if DataRef::needs_blob(data) {
                self.blobs.add_unannounced(data.clone()).await?;
            }
        }
        let identity = self.identity.clone();
        let network = self.network_id.clone();
        let store = self.store.clone();
        blocking(move || {
            let id = body.program_id;
            Ok(store.commit_call_with_job(
                &id,
                CallEffects {
                    height: body.height,
                    timestamp_ms: body.timestamp_ms,
                    writes: &writes,
                    encoded_writes: &encoded_writes,
                    input: &input,
                    output: &output,
                    call_id: body.call_id,
                },
                |root_out| {
                    let mut body = body;
                    body.state_root_out = root_out;
                    let rid = body.id();
                    let sig = identity.bls_sign(
                        crate::identity::BLS_SIG_DST,
                        &receipt_signing_message(&network, &rid),
                    );
                    SignedReceipt {
                        id: rid,
                        receipt: body,
                        signer_bls_key: HexBytes(identity.bls_public_key().to_vec()),
                        signature: HexBytes(sig.to_vec()),
                        attestation,
                    }
                },
                job_commit,
            )?)
        })
        .await
    }

    /// Installs the committees that sequence PBFT programs (the consensus layer).
    pub fn set_committees(&self, committees: &Arc<crate::consensus::Committees>) {
        let _ = self.committees.set(Arc::downgrade(committees));
    }

    fn committees(&self) -> Result<Arc<crate::consensus::Committees>, ProgramError> {
        self.committees
            .get()
            .and_then(|c| c.upgrade())
            .ok_or_else(|| ProgramError::Internal("the committees are not running".into()))
    }

    /// Commits a call its committee decided, with the committee's aggregated attestation.
    pub async fn commit_decided(
        &self,
        body: ExecutionReceipt,
        writes: onvm_rpc_api::program::Writes,
        input: Vec<u8>,
        output: Vec<u8>,
        attestation: Attestation,
    ) -> Result<SignedReceipt, ProgramError> {
        self.commit(body, writes, input, output, Some(attestation), None)
            .await
            .map(|(r, _)| r)
    }

    /// Changes whenever DAG nodes may have been applied (a replicated commit among them).
    pub fn dag_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.dag_changes()
    }

    /// The program's applied height on this node.
    pub async fn height(&self, id: ProgramId) -> Result<u64, ProgramError> {
        Ok(self.require(&id).await?.height)
    }

    /// This node's BLS signature over a receipt id (its vote in a committee).
    pub fn sign_receipt(&self, id: &ReceiptId) -> Vec<u8> {
        self.identity
            .bls_sign(
                crate::identity::BLS_SIG_DST,
                &receipt_signing_message(&self.network_id, id),
            )
            .to_vec()
    }

    /// Completes a job whose attempt its committee decided, when the commit on this node did
    /// not (it came from the leader, or through replication): stores the output blob, then
    /// updates the job record. A crash in between is repaired by job recovery, which finds the
    /// attempt's call committed.
    pub async fn complete_job(
        &self,
        job: JobAttempt,
        receipt: &SignedReceipt,
        output: Vec<u8>,
        logs: Option<AttemptLogs>,
    ) -> Result<Option<JobEvent>, ProgramError> {
        let output_blob = self.blobs.add(output, None).await?.id;
        let store = self.store.clone();
        let (receipt, id) = (receipt.clone(), job.job.job_id);
        let finished = job.finished;
        blocking(move || {
            let mut finished = Some(finished);
            Ok(store
                .update_job(&id, logs, |info| {
                    if let Some(f) = finished.take() {
                        f(info, &receipt, output_blob);
                    }
                    true
                })?
                .1)
        })
        .await
    }

    async fn load(&self, id: &ProgramId) -> Result<Option<ProgramRecord>, ProgramError> {
        let store = self.store.clone();
        let id = *id;
        blocking(move || Ok(store.program(&id)?)).await
    }

    /// One write path per program: its home (the deployer). Replicas apply the home's committed
    /// writes, so they answer state reads and read-only calls, but never commit a call.
    fn require_home(&self, m: &ProgramManifest) -> Result<(), ProgramError> {
        if m.deployer != Hash32(*self.identity.endpoint_id().as_bytes()) {
            return Err(ProgramError::NotHome {
                program: m.program_id,
                home: m.deployer,
            });
        }
        Ok(())
    }

    /// Failover sequencing is open to the members of a committee of more than one.
    fn require_member(&self, m: &ProgramManifest) -> Result<(), ProgramError> {
        let me = Hash32(*self.identity.endpoint_id().as_bytes());
        if m.committee.len() < 2 || !m.committee.iter().any(|c| c.endpoint_id == me) {
            return Err(ProgramError::NotHome {
                program: m.program_id,
                home: m.deployer,
            });
        }
        Ok(())
    }

    async fn require(&self, id: &ProgramId) -> Result<ProgramRecord, ProgramError> {
        self.load(id).await?.ok_or(ProgramError::NotFound(*id))
    }

    /// Fails with `NotHome` unless this node is `id`'s home (jobs check this at submit).
    pub async fn check_home(&self, id: ProgramId) -> Result<(), ProgramError> {
        self.require_home(&self.require(&id).await?.manifest.manifest)
    }

    /// Fails with `NotHome` unless a writing call of `id` may run here: on its home, or, for a
    /// PBFT committee, on any member (its committee sequences the call). Jobs keep one
    /// accepting node (`check_home`), so a job is recorded once.
    pub async fn check_accepts_calls(&self, id: ProgramId) -> Result<(), ProgramError> {
        let manifest = self.require(&id).await?.manifest.manifest;
        if crate::consensus::runs_consensus(&manifest) {
            self.require_member(&manifest)
        } else {
            self.require_home(&manifest)
        }
    }

    /// Fails with `NotHome` unless this node may sequence `id` when its home is down: a member
    /// of a committee of more than one (job failover checks this at submit).
    pub async fn check_member(&self, id: ProgramId) -> Result<(), ProgramError> {
        self.require_member(&self.require(&id).await?.manifest.manifest)
    }

    pub async fn info(&self, id: ProgramId) -> Result<ProgramInfo, ProgramError> {
        Ok(info_of(self.require(&id).await?))
    }

    pub async fn list(
        &self,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<ProgramPage, ProgramError> {
        let after = match cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<ProgramId>()
                    .map_err(|_| ProgramError::BadRequest(format!("invalid cursor `{c}`")))?,
            ),
        };
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
        let store = self.store.clone();
        let mut rows =
            blocking(move || Ok(store.programs_after(after.as_ref(), limit + 1)?)).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last()
                .map(|r| r.manifest.manifest.program_id.to_string())
        } else {
            None
        };
        Ok(ProgramPage {
            items: rows.into_iter().map(info_of).collect(),
            next_cursor,
        })
    }

    fn sequencer(&self, id: &ProgramId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.sequencers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(*id).or_default().clone()
    }

    async fn compiled_for(
        &self,
        manifest: &ProgramManifest,
    ) -> Result<Arc<Compiled>, ProgramError> {
        if let Some(c) = self.vm.cached(&manifest.code) {
            return Ok(c);
        }
        let wasm = self.blobs.read_all(manifest.code).await?;
        let vm = self.vm.clone();
        let code = manifest.code;
        let eps = manifest.entrypoints.clone();
        blocking(move || Ok(vm.compiled(code, &eps, || Ok(wasm))?)).await
    }

    /// Runs one call on a blocking thread against a state snapshot.
    async fn run_in_vm(
        &self,
        compiled: Arc<Compiled>,
        request: CallRequest,
        snapshot: StateSnapshot,
    ) -> Result<CallResult, ProgramError> {
        let vm = self.vm.clone();
        let counters = self.counters.clone();
        blocking(move || {
            let view: Arc<dyn StateView> = Arc::new(SnapshotView(snapshot));
            let started = std::time::Instant::now();
            let result = vm.call(&compiled, request, view);
            counters.timings.vm_call.observe(started.elapsed());
            Ok(result)
        })
        .await
    }

    /// The blobs a program declared, read once per program and kept: they are content-addressed
    /// and fixed by the manifest, so every call of the program sees the same bytes.
    async fn load_blob_refs(&self, manifest: &ProgramManifest) -> Result<BlobRefs, ProgramError> {
        if manifest.blob_refs.is_empty() {
            return Ok(BlobRefs::default());
        }
        let cached = self
            .refs_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&manifest.program_id)
            .cloned();
        if let Some(refs) = cached {
            return Ok(refs);
        }
        let mut out = HashMap::new();
        for r in &manifest.blob_refs {
            out.insert(*r, Arc::new(self.blobs.read_all(*r).await?));
        }
        let refs = Arc::new(out);
        let mut cache = self.refs_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.vm.limits().module_cache_entries as usize {
            cache.clear();
        }
        cache.insert(manifest.program_id, refs.clone());
        Ok(refs)
    }

    /// Runs a call. Writing calls are sequenced per program and committed with a signed
    /// receipt, whatever their outcome; read-only calls see the latest committed state.
    pub async fn execute(
        &self,
        id: ProgramId,
        input: Vec<u8>,
        options: ExecuteOptions,
    ) -> Result<ExecuteResult, ProgramError> {
        self.execute_inner(id, input, options, None)
            .await
            .map(|(r, _)| r)
    }

    /// One attempt of a job: like `execute`, cancellable, and on success the output blob and
    /// the job's completion are committed in the same transaction as the state writes. Any
    /// committee member may run it (its committee agrees on it); the attempt's call id is the
    /// same on every node, so it commits once.
    pub async fn execute_job_attempt(
        &self,
        id: ProgramId,
        input: Vec<u8>,
        options: ExecuteOptions,
        job: JobAttempt,
    ) -> Result<(ExecuteResult, Option<JobEvent>), ProgramError> {
        self.execute_inner(id, input, options, Some(job)).await
    }

    /// Checks a writing or read-only call as far as any node can before running it: sizes and
    /// bounds, the entrypoint, the request id (a fresh one is chosen here, and recorded in the
    /// payload so every member derives the same call id), the caller's signature. A member
    /// that runs a call another node accepted admits it again: it trusts no other node's checks.
    pub async fn admit(&self, mut payload: CallPayload) -> Result<AdmittedCall, ProgramError> {
        let id = payload.program_id;
        let limits = self.vm.limits().clone();
        let input_len = payload.input.0.len() as u64;
        if input_len > limits.max_input_bytes {
            return Err(ProgramError::TooLarge {
                what: "input",
                size: input_len,
                max: limits.max_input_bytes,
                key: "vm.max_input_bytes",
            });
        }
        let options = &payload.options;
        let (fuel, timeout_ms) = limits
            .call_bounds(options.fuel, options.timeout_ms)
            .map_err(ProgramError::BadRequest)?;
        let record = self.require(&id).await?;
        let manifest = record.manifest.manifest;
        let entrypoint = options
            .entrypoint
            .clone()
            .unwrap_or_else(|| manifest.entrypoints[0].clone());
        if !manifest.entrypoints.contains(&entrypoint) {
            return Err(ProgramError::BadRequest(format!(
                "`{entrypoint}` is not an entrypoint of {id} (it has: {})",
                manifest.entrypoints.join(", ")
            )));
        }
        let request_id = match (&payload.job, options.request_id.clone()) {
            // An attempt is its own call: a retried attempt is a new call, a replayed one is not.
            (Some(job), _) => onvm_rpc_api::jobs::attempt_request_id(&job.job_id, job.attempt),
            (None, Some(r)) if r.is_empty() || r.len() > MAX_REQUEST_ID_BYTES => {
                return Err(ProgramError::BadRequest(format!(
                    "request_id must be 1..={MAX_REQUEST_ID_BYTES} bytes"
                )));
            }
            (None, Some(r)) => r,
            (None, None) => fresh_request_id(),
        };
        let input_hash = Hash32::of(&payload.input.0);
        let caller = self.check_caller(
            &manifest,
            options,
            &entrypoint,
            &input_hash,
            &request_id,
            payload.job.as_ref(),
        )?;
        if payload.job.is_none() {
            payload.options.request_id = Some(request_id.clone());
        }
        let call_id = onvm_rpc_api::program::call_id(&id, &caller, &request_id);
        Ok(AdmittedCall {
            manifest,
            payload,
            entrypoint,
            request_id,
            input_hash,
            caller,
            call_id,
            fuel,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// Runs an admitted call against the program's latest committed state, which must be at
    /// `at_height` when one is given (a committee leader executes for one height). A writing
    /// call with a reproducible outcome comes back as a proposed receipt with its writes (for
    /// a committee, with the state root its writes produce); anything else (a read-only call,
    /// a wall-clock timeout, a cancellation, an engine failure) as a result without receipt.
    pub async fn run(
        &self,
        call: &AdmittedCall,
        at_height: Option<u64>,
        cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<Ran, ProgramError> {
        let id = call.payload.program_id;
        let manifest = &call.manifest;
        let options = &call.payload.options;
        let limits = self.vm.limits().clone();
        let compiled = self.compiled_for(manifest).await?;
        let blobs = self.load_blob_refs(manifest).await?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ProgramError::Internal("the VM is shutting down".into()))?;
        let store = self.store.clone();
        let (record, snapshot) = blocking(move || Ok(store.snapshot(&id)?)).await?;
        let height = record.height;
        if let Some(wanted) = at_height
            && wanted != height
        {
            return Err(ProgramError::Internal(format!(
                "the program's state is at height {height}, not {wanted}"
            )));
        }
        let root_in = record.state_root;
        let timestamp_ms = match options.timestamp_ms {
            Some(t) => {
                let now = now_ms();
                let ahead = limits.max_future_skew_ms.min(limits.max_clock_skew_ms);
                if now.saturating_sub(t) > limits.max_clock_skew_ms
                    || t.saturating_sub(now) > ahead
                    || t < record.last_timestamp_ms
                {
                    return Err(ProgramError::BadRequest(format!(
                        "timestamp_ms {t} must be at most {} ms before and {ahead} ms after the node clock ({now}) (vm.max_clock_skew_ms, vm.max_future_skew_ms), and not before the previous call ({})",
                        limits.max_clock_skew_ms, record.last_timestamp_ms
                    )));
                }
                t
            }
            None => now_ms().max(record.last_timestamp_ms),
        };
        // The expiry is checked again where every node can repeat the check: against the
        // call's timestamp, which the receipt records.
        if let Some(signed) = &options.signed
            && timestamp_ms > signed.expires_at_ms
        {
            return Err(caller_refused(CallerError::Expired {
                expires_at_ms: signed.expires_at_ms,
                at_ms: timestamp_ms,
            }));
        }
        let context = CallContext {
            height,
            timestamp_ms,
            seed: call_seed(&id, height, &root_in, &call.input_hash),
            caller: call.caller,
            state_root_in: root_in,
        };
        let input = call.payload.input.0.clone();
        let request = CallRequest {
            entrypoint: call.entrypoint.clone(),
            input: input.clone(),
            fuel: call.fuel,
            timeout: call.timeout,
            read_only: options.read_only,
            context: context.clone(),
            blobs,
            cancel,
        };
        let result = self.run_in_vm(compiled, request, snapshot).await?;
        metrics::add(&self.counters.calls_executed, 1);
        metrics::add(&self.counters.fuel_used, result.fuel_used);
        if !result.outcome.is_ok() {
            metrics::add(&self.counters.calls_failed, 1);
        }
        let mut answer = ExecuteResult {
            program_id: id,
            outcome: result.outcome.clone(),
            output_base64: result.output.clone().into(),
            fuel_used: result.fuel_used,
            state_root_in: root_in,
            state_root_out: root_in,
            logs: result.logs,
            logs_truncated: result.logs_truncated,
            receipt: None,
        };
        // A wall-clock timeout, a cancellation or an engine failure happened on this node only:
        // no member could reproduce it, so it never takes a height. The call changes nothing,
        // gets no receipt, and its request id stays free for a retry.
        if options.read_only || !result.outcome.is_reproducible() {
            if !options.read_only {
                metrics::add(&self.counters.calls_interrupted, 1);
            }
            return Ok(Ran::Interrupted(Box::new(answer)));
        }
        let digest = write_digest(
            result
                .writes
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref())),
        );
        let job = call.payload.job.as_ref();
        let mut body = ExecutionReceipt {
            version: onvm_rpc_api::program::RECEIPT_VERSION,
            network_id: self.network_id.clone(),
            program_id: id,
            code_hash: manifest.code,
            engine: ENGINE_FINGERPRINT.to_string(),
            entrypoint: call.entrypoint.clone(),
            height,
            input_hash: call.input_hash,
            caller: call.caller,
            call_id: call.call_id,
            caller_proof: options.signed.as_ref().map(|s| CallerProof {
                request_id: match job {
                    Some(job) => job.request_id.clone(),
                    None => call.request_id.clone(),
                },
                expires_at_ms: s.expires_at_ms,
                signature: s.signature.clone(),
                job: job.map(|job| JobAttemptProof {
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                }),
            }),
            timestamp_ms: context.timestamp_ms,
            seed: context.seed,
            state_root_in: root_in,
            state_root_out: root_in,
            write_digest: digest,
            output_hash: Hash32::of(&result.output),
            output_len: result.output.len() as u64,
            fuel_limit: call.fuel,
            fuel_used: result.fuel_used,
            outcome: result.outcome,
            executor: Hash32(*self.identity.endpoint_id().as_bytes()),
        };
        let writes = result.writes;
        // A committee signs the receipt before it commits: its state root comes from a dry
        // run here, and the writes are applied again at commit (keeping the write transaction
        // open across the members' round trips would block every other writer).
        if manifest.committee.len() > 1 {
            let preview = self.store.clone();
            let proposed = writes.clone();
            body.state_root_out =
                blocking(move || Ok(preview.preview_root(&id, &proposed)?)).await?;
            answer.state_root_out = body.state_root_out;
            if self.committee.debug_forge_callers && body.caller != Hash32::ZERO {
                body.caller = Hash32::of(&body.caller.0);
                if let Some(proof) = &body.caller_proof {
                    body.call_id =
                        onvm_rpc_api::program::call_id(&id, &body.caller, &proof.request_id);
                }
            }
        }
        Ok(Ran::Proposed(Box::new(Proposed {
            body,
            writes,
            input,
            output: result.output,
            result: answer,
        })))
    }

    async fn execute_inner(
        &self,
        id: ProgramId,
        input: Vec<u8>,
        options: ExecuteOptions,
        job: Option<JobAttempt>,
    ) -> Result<(ExecuteResult, Option<JobEvent>), ProgramError> {
        let read_only = options.read_only;
        let call = self
            .admit(CallPayload {
                program_id: id,
                input: input.into(),
                options,
                job: job.as_ref().map(|j| j.job.clone()),
            })
            .await?;
        if read_only {
            return match self.run(&call, None, None).await? {
                Ran::Interrupted(result) => finish_with(None, *result),
                Ran::Proposed(_) => Err(ProgramError::Internal(
                    "a read-only call produced a receipt".into(),
                )),
            };
        }
        let manifest = call.manifest.clone();
        if crate::consensus::runs_consensus(&manifest) {
            self.require_member(&manifest)?;
            let committees = self.committees()?;
            return committees.execute(call, job).await;
        }
        // A committee of one: its home runs and commits the call alone. Writers hold the
        // program's sequencer lock from reading the root to committing.
        self.require_home(&manifest)?;
        let sequencer = self.sequencer(&id);
        let _turn = sequencer.lock().await;
        if let Some(done) = self.committed(id, call.call_id).await? {
            metrics::add(&self.counters.calls_deduplicated, 1);
            return answer_committed(done, call.request_id, &call.input_hash, &call.entrypoint);
        }
        let cancel = job.as_ref().map(|j| j.cancel.clone());
        let proposed = match self.run(&call, None, cancel).await? {
            Ran::Interrupted(result) => return finish_with(None, *result),
            Ran::Proposed(p) => *p,
        };
        let job_commit = match job {
            Some(job) if proposed.result.outcome.is_ok() => {
                Some(self.job_commit(job, &proposed).await?)
            }
            _ => None,
        };
        let Proposed {
            body,
            writes,
            input,
            output,
            mut result,
        } = proposed;
        let (receipt, job_event) = self
            .commit(body, writes, input, output, None, job_commit)
            .await?;
        result.state_root_out = receipt.receipt.state_root_out;
        result.receipt = Some(receipt);
        finish_with(job_event, result)
    }

    /// A successful job attempt stores its output first (content-addressed, harmless if the
    /// commit never happens), then completes the job inside the commit.
    async fn job_commit(
        &self,
        job: JobAttempt,
        proposed: &Proposed,
    ) -> Result<JobCommit, ProgramError> {
        let output_blob = self.blobs.add(proposed.output.clone(), None).await?.id;
        let finished = job.finished;
        Ok(JobCommit {
            job_id: job.job.job_id,
            update: Box::new(move |info, receipt| finished(info, receipt, output_blob)),
            logs: Some(AttemptLogs {
                attempt: job.job.attempt,
                lines: proposed.result.logs.clone(),
                truncated: proposed.result.logs_truncated,
            }),
        })
    }

    /// The call committed under `call_id`, if any (a retried request id).
    pub async fn committed(
        &self,
        id: ProgramId,
        call_id: Hash32,
    ) -> Result<Option<CommittedCall>, ProgramError> {
        let store = self.store.clone();
        blocking(move || Ok(store.committed_call(&id, &call_id)?)).await
    }

    /// Who is calling: the signer of a signed call (its signature checked over what it asks
    /// for, and not expired by this node's clock), else the anonymous all-zero caller, which
    /// a program deployed with `require_signed_calls` refuses for writing calls.
    fn check_caller(
        &self,
        manifest: &ProgramManifest,
        options: &ExecuteOptions,
        entrypoint: &str,
        input_hash: &Hash32,
        request_id: &str,
        job: Option<&JobRef>,
    ) -> Result<Hash32, ProgramError> {
        let Some(signed) = &options.signed else {
            if manifest.require_signed_calls && !options.read_only {
                return Err(ProgramError::CallerRefused {
                    kind: "signed_call_required",
                    message: format!(
                        "program {} accepts only signed calls: sign with a caller key (`onvm execute --key FILE`, `onvm submit-job --key FILE`; docs/RPC.md \"Signed calls\")",
                        manifest.program_id,
                    ),
                });
            }
            return Ok(Hash32::ZERO);
        };
        if options.entrypoint.is_none() {
            return Err(caller_refused(CallerError::Missing(
                "an explicit entrypoint (it is signed)",
            )));
        }
        // A job attempt runs under the job's signed request id and attempt count; a call
        // under its own request id, which the client must name.
        let (signed_request_id, max_attempts) = match job {
            Some(job) => (job.request_id.as_str(), job.max_attempts),
            None if options.request_id.is_none() => {
                return Err(caller_refused(CallerError::Missing(
                    "a request_id (it is signed, and makes the call id)",
                )));
            }
            None => (request_id, 1),
        };
        // The fuel is signed, so it must be named: the node's default is not the client's to
        // know, and the receipt records exactly what was signed.
        let Some(fuel) = options.fuel else {
            return Err(caller_refused(CallerError::Missing(
                "an explicit fuel (it is signed)",
            )));
        };
        let terms = onvm_rpc_api::caller::SignedTerms {
            expires_at_ms: signed.expires_at_ms,
            max_attempts,
            fuel,
            read_only: options.read_only,
            timestamp_ms: options.timestamp_ms,
        };
        onvm_rpc_api::caller::check_signed_request(
            &self.network_id,
            &manifest.program_id,
            entrypoint,
            input_hash,
            signed_request_id,
            &terms,
            signed,
            now_ms(),
        )
        .map_err(caller_refused)?;
        Ok(signed.caller)
    }

    pub async fn state_get(&self, id: ProgramId, key: Vec<u8>) -> Result<StateValue, ProgramError> {
        let (root, value, _) = self.proof_parts(id, key.clone()).await?;
        Ok(StateValue {
            program_id: id,
            key_base64: key.into(),
            value_base64: value.map(Into::into),
            state_root: root,
        })
    }

    pub async fn state_proof(
        &self,
        id: ProgramId,
        key: Vec<u8>,
    ) -> Result<StateProof, ProgramError> {
        let (root, value, proof) = self.proof_parts(id, key.clone()).await?;
        Ok(StateProof {
            program_id: id,
            key_base64: key.into(),
            value_base64: value.map(Into::into),
            state_root: root,
            proof,
        })
    }

    async fn proof_parts(
        &self,
        id: ProgramId,
        key: Vec<u8>,
    ) -> Result<(Hash32, Option<Vec<u8>>, onvm_rpc_api::smt::SmtProof), ProgramError> {
        if key.is_empty() || key.len() as u64 > self.vm.limits().max_key_bytes {
            return Err(ProgramError::BadRequest(format!(
                "keys are 1..={} bytes",
                self.vm.limits().max_key_bytes
            )));
        }
        let store = self.store.clone();
        blocking(move || match store.state_proof(&id, &key) {
            Err(StoreError::UnknownProgram(p)) => Err(ProgramError::NotFound(p)),
            other => Ok(other?),
        })
        .await
    }

    /// The node's counters, for the committee glue's own.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A committed receipt, read on the caller's thread (one indexed read): for the committee
    /// glue, which must answer inside its synchronous send path. None if absent or unreadable.
    pub fn stored_receipt(&self, id: &ReceiptId) -> Option<SignedReceipt> {
        self.store.receipt(id).ok().flatten()
    }

    pub async fn receipt(&self, id: ReceiptId) -> Result<SignedReceipt, ProgramError> {
        let store = self.store.clone();
        blocking(move || store.receipt(&id)?.ok_or(ProgramError::ReceiptNotFound(id))).await
    }

    /// The input of a committed call (auditors replay it), if this node holds it.
    pub async fn call_input(&self, id: ReceiptId) -> Result<Option<Vec<u8>>, ProgramError> {
        let store = self.store.clone();
        blocking(move || Ok(store.call_input(&id)?)).await
    }

    /// Every disagreement this node recorded as a member of `program`'s committee.
    pub async fn evidence(
        &self,
        program: ProgramId,
    ) -> Result<Vec<onvm_rpc_api::committee::Evidence>, ProgramError> {
        let store = self.store.clone();
        blocking(move || Ok(store.evidence(&program)?)).await
    }

    /// Checks a receipt against its program's committee as this node knows it.
    pub async fn verify_receipt(
        &self,
        receipt: SignedReceipt,
    ) -> Result<onvm_rpc_api::committee::ReceiptVerification, ProgramError> {
        let manifest = self
            .require(&receipt.receipt.program_id)
            .await?
            .manifest
            .manifest;
        let store = self.store.clone();
        let network = self.network_id.clone();
        blocking(move || {
            let committee = store.verified_committee(&manifest)?;
            Ok(onvm_rpc_api::committee::verify_signed(
                &receipt, &committee, &network,
            ))
        })
        .await
    }

    /// Whether this node applied receipt `id` (a refused one is stored in the DAG but never
    /// applied). Blocking: one indexed read.
    pub fn is_applied(&self, id: &ReceiptId) -> bool {
        self.store.receipt(id).ok().flatten().is_some()
    }

    pub async fn receipts(
        &self,
        id: ProgramId,
        before_height: Option<u64>,
        limit: Option<u32>,
    ) -> Result<ReceiptPage, ProgramError> {
        self.require(&id).await?;
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
        let store = self.store.clone();
        let items = blocking(move || Ok(store.receipts(&id, before_height, limit)?)).await?;
        let next_before_height = if items.len() == limit {
            items.last().map(|r| r.receipt.height).filter(|h| *h > 0)
        } else {
            None
        };
        Ok(ReceiptPage {
            items,
            next_before_height,
        })
    }
}

/// A refused caller signature as the error the client sees, by kind.
pub(crate) fn caller_refused(e: CallerError) -> ProgramError {
    ProgramError::CallerRefused {
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// The answer to a request id that was already committed: the committed call's result (its
/// logs are not kept), or a conflict if the request differs.
pub(crate) fn answer_committed(
    done: CommittedCall,
    request_id: String,
    input_hash: &Hash32,
    entrypoint: &str,
) -> Result<(ExecuteResult, Option<JobEvent>), ProgramError> {
    let r = &done.receipt.receipt;
    if r.input_hash != *input_hash || r.entrypoint != entrypoint {
        return Err(ProgramError::RequestConflict {
            request_id,
            receipt: done.receipt.id,
        });
    }
    finish_with(
        None,
        ExecuteResult {
            program_id: r.program_id,
            outcome: r.outcome.clone(),
            output_base64: done.output.into(),
            fuel_used: r.fuel_used,
            state_root_in: r.state_root_in,
            state_root_out: r.state_root_out,
            logs: Vec::new(),
            logs_truncated: false,
            receipt: Some(done.receipt),
        },
    )
}

pub(crate) fn finish_with(
    event: Option<JobEvent>,
    result: ExecuteResult,
) -> Result<(ExecuteResult, Option<JobEvent>), ProgramError> {
    if result.outcome.is_ok() {
        Ok((result, event))
    } else {
        Err(ProgramError::ExecutionFailed(Box::new(result)))
    }
}

/// Completes a job record inside the commit, given the receipt and the output blob.
pub type JobFinished = Box<dyn FnOnce(&mut JobInfo, &SignedReceipt, BlobId) + Send>;

/// What a job attempt adds to a call.
pub struct JobAttempt {
    pub job: JobRef,
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Completes the job record (inside the commit) given its receipt and output blob.
    pub finished: JobFinished,
}

/// The part of a job attempt that travels with its call to the member that runs it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobRef {
    pub job_id: JobId,
    /// The job's request id (a signed job's caller signed it).
    pub request_id: String,
    pub attempt: u32,
    /// `max_retries + 1`: the attempts a signed job's caller allowed.
    pub max_attempts: u32,
}

/// A writing (or read-only) call as it travels between nodes: what the client sent, with the
/// request id chosen by the node that accepted it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallPayload {
    pub program_id: ProgramId,
    pub input: onvm_rpc_api::types::Base64Bytes,
    pub options: ExecuteOptions,
    pub job: Option<JobRef>,
}

/// A call that passed [`Programs::admit`].
#[derive(Clone, Debug)]
pub struct AdmittedCall {
    pub manifest: ProgramManifest,
    pub payload: CallPayload,
    pub entrypoint: String,
    pub request_id: String,
    pub input_hash: Hash32,
    pub caller: Hash32,
    pub call_id: Hash32,
    pub fuel: u64,
    pub timeout: Duration,
}

/// What [`Programs::run`] produced.
pub enum Ran {
    /// A read-only call, or one interrupted on this node: no receipt, nothing to commit.
    Interrupted(Box<ExecuteResult>),
    Proposed(Box<Proposed>),
}

/// A writing call run to a reproducible outcome, ready to be attested and committed.
pub struct Proposed {
    /// The receipt before its executor's signature (for a committee, with the state root
    /// its writes produce).
    pub body: ExecutionReceipt,
    pub writes: onvm_rpc_api::program::Writes,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    /// The answer for the client (its receipt is added at commit).
    pub result: ExecuteResult,
}

fn info_of(r: ProgramRecord) -> ProgramInfo {
    ProgramInfo {
        program_id: r.manifest.manifest.program_id,
        manifest: r.manifest,
        state_root: r.state_root,
        height: r.height,
        keys: r.keys,
    }
}
