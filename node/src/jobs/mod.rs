//! Durable jobs: a queue in the node database, a scheduler that runs a bounded number of jobs at
//! once, retries with exponential backoff and jitter, per-job timeouts and fuel, cancellation of
//! pending and running jobs, idempotent submission, and an event log subscribers can resume.
//!
//! Retry policy (docs/RPC.md): timeouts, traps (including `onvm_abort`) and internal errors are
//! retried up to `max_retries` times; out of fuel, memory limit, stack overflow, bad output and
//! rejected calls are not (they are deterministic on the same input and would fail the same way).
//! A successful attempt commits its state writes, receipt, output blob id and the job's
//! `completed` status in one transaction, so a job's writes are applied exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onvm_rpc_api::jobs::{
    AttemptLogs, JobAttempt as AttemptRecord, JobEvent, JobFilter, JobInfo, JobLogs, JobOutput,
    JobPage, JobStatus, SubmitJob, SubmitResult, job_id,
};
use onvm_rpc_api::program::{ExecuteOptions, Outcome};
use onvm_rpc_api::{BlobId, Hash32, JobId};
use tokio::sync::{Notify, broadcast};

use crate::blobs::{BlobError, Blobs};
use crate::config::{JobsConfig, VmConfig};
use crate::metrics::{self, Counters};
use crate::programs::{JobAttempt, JobRef, ProgramError, Programs};
use crate::store::{Store, StoreError};
use crate::util::now_ms;

pub mod policy;

const MAX_REQUEST_ID: usize = 128;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
const LATENCY_SAMPLES: usize = 4096;
/// How long shutdown waits for running attempts before leaving them to recovery.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("invalid job request: {0}")]
    BadRequest(String),
    #[error("job {id} has no output: it is {status}", status = .status.as_str())]
    NoOutput { id: JobId, status: JobStatus },
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::Store(StoreError::JobDecode(format!("blocking task failed: {e}"))))?
        .map_err(JobError::Store)
}

/// Cloneable handle to the job service.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    programs: Programs,
    blobs: Blobs,
    config: JobsConfig,
    vm: VmConfig,
    max_inline: u64,
    events: broadcast::Sender<JobEvent>,
    wake: Notify,
    /// Cancel flags of running attempts.
    running: Mutex<HashMap<JobId, Arc<AtomicBool>>>,
    counters: Arc<Counters>,
    /// Submit-to-terminal latencies in ms, newest last.
    latencies: Mutex<VecDeque<u64>>,
}

/// Latency percentiles and queue figures for health and metrics.
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    pub pending: u64,
    pub running: u64,
    pub latency_p50_ms: u64,
    pub latency_p90_ms: u64,
    pub latency_p99_ms: u64,
}

impl Jobs {
    pub fn new(
        store: Store,
        programs: Programs,
        blobs: Blobs,
        config: JobsConfig,
        vm: VmConfig,
        max_inline: u64,
        counters: Arc<Counters>,
    ) -> Self {
        let (events, _) = broadcast::channel(config.event_buffer as usize);
        Self {
            inner: Arc::new(Inner {
                store,
                programs,
                blobs,
                config,
                vm,
                max_inline,
                events,
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
                counters,
                latencies: Mutex::new(VecDeque::new()),
            }),
        }
    }

    fn publish(&self, event: Option<JobEvent>) {
        if let Some(e) = event {
            // No receivers is fine: events are persisted and replayed on subscribe.
            let _ = self.inner.events.send(e);
        }
    }

    /// Accepts a job for a program this node is the home of.
    pub async fn submit(&self, req: SubmitJob) -> Result<SubmitResult, JobError> {
        self.submit_as(req, false).await
    }

    /// Job failover: accepts a job as a committee member because the home (and the members
    /// ranked before this one) could not be reached. The job id is the same on every node, so
    /// a resubmission anywhere finds it; its attempts commit once whoever runs them.
    pub async fn submit_takeover(&self, req: SubmitJob) -> Result<SubmitResult, JobError> {
        self.submit_as(req, true).await
    }

    async fn submit_as(
        &self,
        mut req: SubmitJob,
        takeover: bool,
    ) -> Result<SubmitResult, JobError> {
        let cfg = &self.inner.config;
        let vm = &self.inner.vm;
        if req.request_id.is_empty() || req.request_id.len() > MAX_REQUEST_ID {
            return Err(JobError::BadRequest(format!(
                "request_id must be 1..={MAX_REQUEST_ID} bytes"
            )));
        }
        let max_retries = req.max_retries.unwrap_or(cfg.default_max_retries);
        if max_retries > cfg.max_retries {
            return Err(JobError::BadRequest(format!(
                "max_retries is at most {} (jobs.max_retries)",
                cfg.max_retries
            )));
        }
        let (fuel, timeout_ms) = vm
            .call_bounds(req.fuel, req.timeout_ms)
            .map_err(JobError::BadRequest)?;
        if let Some(m) = &req.metadata
            && serde_json::to_vec(m)
                .map(|v| v.len() as u64)
                .unwrap_or(u64::MAX)
                > cfg.max_metadata_bytes
        {
            return Err(JobError::BadRequest(format!(
                "metadata is larger than {} bytes",
                cfg.max_metadata_bytes
            )));
        }
        // The program must exist and be sequenced here; its entrypoint is checked when the job
        // runs.
        if takeover {
            self.inner.programs.check_member(req.program_id).await?;
        } else {
            self.inner.programs.check_home(req.program_id).await?;
        }
        let program = self.inner.programs.info(req.program_id).await?;
        if program.manifest.manifest.require_signed_calls && req.signed.is_none() {
            return Err(JobError::Program(ProgramError::CallerRefused {
                kind: "signed_call_required",
                message: format!(
                    "program {} accepts only signed calls: sign the job with a caller key (`onvm submit-job --key FILE`)",
                    req.program_id
                ),
            }));
        }
        let (input_blob, input_hash, input_size) = match (req.input_base64.take(), req.input_blob) {
            (Some(data), None) => {
                let data = data.0;
                if data.len() as u64 > vm.max_input_bytes {
                    return Err(JobError::BadRequest(format!(
                        "input is larger than {} bytes (vm.max_input_bytes)",
                        vm.max_input_bytes
                    )));
                }
                let hash = Hash32::of(&data);
                let size = data.len() as u64;
                (self.inner.blobs.add(data, None).await?.id, hash, size)
            }
            (None, Some(blob)) => {
                let stat = self.inner.blobs.stat(blob).await?;
                if stat.size > vm.max_input_bytes {
                    return Err(JobError::BadRequest(format!(
                        "input is larger than {} bytes (vm.max_input_bytes)",
                        vm.max_input_bytes
                    )));
                }
                (blob, Hash32(*blob.as_bytes()), stat.size)
            }
            (None, None) => {
                let hash = Hash32::of(b"");
                (self.inner.blobs.add(Vec::new(), None).await?.id, hash, 0)
            }
            (Some(_), Some(_)) => {
                return Err(JobError::BadRequest(
                    "give at most one of input_base64 and input_blob".into(),
                ));
            }
        };
        let now = now_ms();
        if let Some(signed) = &req.signed {
            check_job_signature(
                self.inner.programs.network_id(),
                &req,
                input_hash,
                max_retries,
                signed,
                now,
            )?;
        }
        let job = JobInfo {
            job_id: job_id(
                &req.program_id,
                &req.signed
                    .as_ref()
                    .map(|s| s.caller)
                    .unwrap_or(Hash32::ZERO),
                &req.request_id,
            ),
            program_id: req.program_id,
            request_id: req.request_id,
            input_hash,
            input_size,
            input_blob,
            entrypoint: req.entrypoint,
            status: JobStatus::Pending,
            max_retries,
            timeout_ms,
            fuel,
            metadata: req.metadata,
            attempts: Vec::new(),
            created_at_ms: now,
            updated_at_ms: now,
            next_run_at_ms: Some(now),
            error: None,
            output_blob: None,
            output_size: None,
            receipt_id: None,
            cancel_requested: false,
            signed: req.signed,
        };
        let store = self.inner.store.clone();
        let max_queue = cfg.max_queue;
        let (job, created, event) = blocking(move || store.submit_job(job, max_queue)).await?;
        if created {
            metrics::add(&self.inner.counters.jobs_submitted, 1);
            self.publish(event);
            self.inner.wake.notify_one();
        }
        Ok(SubmitResult { job, created })
    }

    pub async fn status(&self, id: JobId) -> Result<JobInfo, JobError> {
        let store = self.inner.store.clone();
        blocking(move || store.job(&id))
            .await?
            .ok_or(JobError::NotFound(id))
    }

    pub async fn output(&self, id: JobId) -> Result<JobOutput, JobError> {
        let job = self.status(id).await?;
        let (Some(blob), JobStatus::Completed) = (job.output_blob, job.status) else {
            return Err(JobError::NoOutput {
                id,
                status: job.status,
            });
        };
        let size = job.output_size.unwrap_or(0);
        let inline = if size <= self.inner.max_inline {
            Some(self.inner.blobs.read_all(blob).await?.into())
        } else {
            None
        };
        Ok(JobOutput {
            job_id: id,
            output_blob: blob,
            size,
            output_base64: inline,
        })
    }

    pub async fn logs(&self, id: JobId) -> Result<JobLogs, JobError> {
        self.status(id).await?;
        let store = self.inner.store.clone();
        blocking(move || store.job_logs(&id)).await
    }

    /// Cancels a pending job at once, or stops a running one (within ~10 ms). Idempotent:
    /// cancelling a finished job changes nothing and returns it.
    pub async fn cancel(&self, id: JobId) -> Result<JobInfo, JobError> {
        if let Some(flag) = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            flag.store(true, Ordering::Relaxed);
        }
        let store = self.inner.store.clone();
        let now = now_ms();
        let (job, event) = blocking(move || {
            store.update_job(&id, None, |job| match job.status {
                JobStatus::Pending => {
                    job.status = JobStatus::Cancelled;
                    job.error = Some("cancelled by request".into());
                    job.cancel_requested = true;
                    job.next_run_at_ms = None;
                    job.updated_at_ms = now;
                    true
                }
                JobStatus::Running if !job.cancel_requested => {
                    job.cancel_requested = true;
                    job.updated_at_ms = now;
                    true
                }
                _ => false,
            })
        })
        .await
        .map_err(|e| match e {
            JobError::Store(StoreError::UnknownJob(id)) => JobError::NotFound(id),
            other => other,
        })?;
        if event.is_some() {
            metrics::add(&self.inner.counters.jobs_cancelled, 1);
            self.record_latency(&job);
        }
        self.publish(event);
        Ok(job)
    }

    pub async fn list(
        &self,
        filter: JobFilter,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<JobPage, JobError> {
        let after = match cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<JobId>()
                    .map_err(|_| JobError::BadRequest(format!("invalid cursor `{c}`")))?,
            ),
        };
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize;
        let store = self.inner.store.clone();
        let mut items =
            blocking(move || store.list_jobs(&filter, after.as_ref(), limit + 1)).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|j| j.job_id.to_string())
        } else {
            None
        };
        Ok(JobPage { items, next_cursor })
    }

    /// Live events (a wake-up signal for subscribers; the store is the source of truth).
    pub fn subscribe_live(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Where events of jobs replicated from other nodes are announced to live subscribers.
    pub fn event_sender(&self) -> broadcast::Sender<JobEvent> {
        self.inner.events.clone()
    }

    pub async fn events_from(
        &self,
        job: Option<JobId>,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, JobError> {
        let store = self.inner.store.clone();
        blocking(move || match job {
            Some(id) => store.job_events_for(&id, from_seq, limit),
            None => store.job_events(from_seq, limit),
        })
        .await
    }

    pub async fn last_seq(&self) -> Result<u64, JobError> {
        let store = self.inner.store.clone();
        blocking(move || store.last_job_event_seq()).await
    }

    pub async fn stats(&self) -> JobStats {
        let store = self.inner.store.clone();
        let pending = blocking(move || store.pending_job_count())
            .await
            .unwrap_or(0);
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64;
        let mut samples: Vec<u64> = self
            .inner
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        samples.sort_unstable();
        let pct = |p: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
            samples[idx.min(samples.len() - 1)]
        };
        JobStats {
            pending,
            running,
            latency_p50_ms: pct(0.50),
            latency_p90_ms: pct(0.90),
            latency_p99_ms: pct(0.99),
        }
    }

    fn record_latency(&self, job: &JobInfo) {
        let mut l = self
            .inner
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if l.len() >= LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(job.updated_at_ms.saturating_sub(job.created_at_ms));
    }

    /// Completes `job` if the call of its last attempt is committed with a successful outcome;
    /// false when it is not.
    async fn complete_from_committed(&self, job: &JobInfo) -> Result<bool, JobError> {
        let Some(attempt) = job.attempts.last() else {
            return Ok(false);
        };
        let caller = job
            .signed
            .as_ref()
            .map(|s| s.caller)
            .unwrap_or(onvm_rpc_api::Hash32::ZERO);
        let request_id = onvm_rpc_api::jobs::attempt_request_id(&job.job_id, attempt.number);
        let call_id = onvm_rpc_api::program::call_id(&job.program_id, &caller, &request_id);
        let Some(done) = self
            .inner
            .programs
            .committed(job.program_id, call_id)
            .await?
        else {
            return Ok(false);
        };
        if !done.receipt.receipt.outcome.is_ok() {
            return Ok(false);
        }
        let blob = self.inner.blobs.add(done.output, None).await?.id;
        let store = self.inner.store.clone();
        let (id, receipt) = (job.job_id, done.receipt);
        let (_, event) = blocking(move || {
            store.update_job(&id, None, |info| {
                complete_job(info, &receipt, blob);
                true
            })
        })
        .await?;
        self.publish(event);
        Ok(true)
    }

    /// Attempts that were running when the node stopped: completed from their committed call
    /// if it committed; on a committee, run again as the same attempt (its call may still be
    /// decided); alone, retried by policy (completion is atomic with the commit, so nothing
    /// committed), or failed if no retries are left.
    async fn recover(&self) -> Result<(), JobError> {
        let store = self.inner.store.clone();
        let interrupted = blocking(move || store.jobs_with_status(JobStatus::Running)).await?;
        for job in interrupted {
            let id = job.job_id;
            // Under a PBFT committee an attempt's call may be decided and committed (by the
            // leader, or through replication) before this node completed the job: complete it
            // from that receipt, never run the work a second time.
            if self.complete_from_committed(&job).await? {
                continue;
            }
            // On a committee the attempt's call may still be decided by the other members:
            // it runs again as the same attempt (same call id, so it commits at most once).
            // A committee of one commits atomically with the job, so nothing of it survived.
            let may_still_commit = self
                .inner
                .programs
                .info(job.program_id)
                .await
                .is_ok_and(|p| p.manifest.manifest.committee.len() > 1);
            let store = self.inner.store.clone();
            let now = now_ms();
            let (_, event) = blocking(move || {
                store.update_job(&id, None, |job| {
                    if let Some(a) = job.attempts.last_mut()
                        && a.finished_at_ms.is_none()
                    {
                        a.finished_at_ms = Some(now);
                        a.outcome = Some(if may_still_commit {
                            policy::UNDECIDED.into()
                        } else {
                            "interrupted".into()
                        });
                        a.error = Some("the node stopped during this attempt".into());
                    }
                    job.updated_at_ms = now;
                    if job.cancel_requested {
                        job.status = JobStatus::Cancelled;
                        job.error = Some("cancelled by request".into());
                    } else if may_still_commit || job.attempts.len() as u32 <= job.max_retries {
                        job.status = JobStatus::Pending;
                        job.next_run_at_ms = Some(now);
                    } else {
                        job.status = JobStatus::Failed;
                        job.error = Some("the node stopped during the last attempt".into());
                    }
                    true
                })
            })
            .await?;
            self.publish(event);
        }
        Ok(())
    }

    /// The scheduler: runs due jobs, at most `jobs.max_running` at once, until `stop` fires.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if let Err(e) = self.recover().await {
            tracing::error!("recovering interrupted jobs: {e}");
        }
        let mut attempts = tokio::task::JoinSet::new();
        loop {
            while attempts.try_join_next().is_some() {}
            let free = (self.inner.config.max_running as usize).saturating_sub(attempts.len());
            if free > 0 {
                let store = self.inner.store.clone();
                match blocking(move || store.due_jobs(now_ms(), free)).await {
                    Ok(due) => {
                        for job in due {
                            if let Some(started) = self.start(job).await {
                                let this = self.clone();
                                attempts.spawn(async move { this.attempt(started).await });
                            }
                        }
                    }
                    Err(e) => tracing::error!("reading the job queue: {e}"),
                }
            }
            let store = self.inner.store.clone();
            let next_due = blocking(move || store.next_due_at()).await.ok().flatten();
            let wait = match next_due {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms()).clamp(1, 1000)),
                None => Duration::from_secs(1),
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.inner.wake.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Let running attempts finish briefly; whatever is still running is recovered on restart.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        attempts.abort_all();
    }

    /// Marks a due job running; returns it, or None if it changed meanwhile.
    async fn start(&self, job: JobInfo) -> Option<JobInfo> {
        let id = job.job_id;
        let flag = Arc::new(AtomicBool::new(false));
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, flag);
        let store = self.inner.store.clone();
        let now = now_ms();
        let result = blocking(move || {
            store.update_job(&id, None, |job| {
                if job.status != JobStatus::Pending {
                    return false;
                }
                job.status = JobStatus::Running;
                job.next_run_at_ms = None;
                job.updated_at_ms = now;
                match job.attempts.last_mut() {
                    // Its call may still be decided: run it again under the same call id.
                    Some(last) if last.outcome.as_deref() == Some(policy::UNDECIDED) => {
                        last.started_at_ms = now;
                        last.finished_at_ms = None;
                        last.outcome = None;
                        last.error = None;
                    }
                    _ => job.attempts.push(AttemptRecord {
                        number: job.attempts.len() as u32 + 1,
                        started_at_ms: now,
                        finished_at_ms: None,
                        outcome: None,
                        error: None,
                        fuel_used: 0,
                        receipt_id: None,
                    }),
                }
                true
            })
        })
        .await;
        match result {
            Ok((job, Some(event))) => {
                self.publish(Some(event));
                Some(job)
            }
            Ok((_, None)) => {
                self.inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                None
            }
            Err(e) => {
                tracing::error!("starting job {id}: {e}");
                self.inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                None
            }
        }
    }

    async fn attempt(&self, job: JobInfo) {
        let id = job.job_id;
        let flag = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let number = job.attempts.len() as u32;
        let outcome = self.run_attempt(&job, number, flag.clone()).await;
        let event = match outcome {
            Ok(event) => event,
            Err(failure) => {
                let cancelled =
                    flag.load(Ordering::Relaxed) || failure.outcome == Some(Outcome::Cancelled);
                self.fail_attempt(id, number, failure, cancelled).await
            }
        };
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(e) = &event {
            if e.status.is_terminal()
                && let Ok(job) = self.status(id).await
            {
                self.record_latency(&job);
            }
            metrics::add(&self.inner.counters.job_fuel_used, e.fuel_used);
        }
        self.publish(event);
        self.inner.wake.notify_one();
    }

    /// Ok: the job completed (its event). Err: the attempt failed, with what is known of it.
    async fn run_attempt(
        &self,
        job: &JobInfo,
        number: u32,
        cancel: Arc<AtomicBool>,
    ) -> Result<Option<JobEvent>, AttemptFailure> {
        let input = self
            .inner
            .blobs
            .read_all(job.input_blob)
            .await
            .map_err(|e| AttemptFailure::before_the_call(format!("reading the input: {e}")))?;
        let options = ExecuteOptions {
            fuel: Some(job.fuel),
            read_only: false,
            entrypoint: job.entrypoint.clone(),
            timeout_ms: Some(job.timeout_ms),
            timestamp_ms: None,
            // The attempt's own request id is derived from the job id and attempt number.
            request_id: None,
            // A signed job's attempts run as its caller.
            signed: job.signed.clone(),
        };
        let finished = Box::new(complete_job);
        let attempt = JobAttempt {
            job: JobRef {
                job_id: job.job_id,
                request_id: job.request_id.clone(),
                attempt: number,
                max_attempts: job.max_retries.saturating_add(1),
            },
            cancel,
            finished,
        };
        match self
            .inner
            .programs
            .execute_job_attempt(job.program_id, input, options, attempt)
            .await
        {
            Ok((_, event)) => {
                metrics::add(&self.inner.counters.jobs_completed, 1);
                Ok(event)
            }
            Err(ProgramError::ExecutionFailed(result)) => {
                let message = crate::programs::describe(&result.outcome);
                let receipt = result.receipt.as_ref().map(|r| r.id);
                // Logs of failed attempts are kept too.
                let logs = AttemptLogs {
                    attempt: number,
                    lines: result.logs.clone(),
                    truncated: result.logs_truncated,
                };
                let store = self.inner.store.clone();
                let id = job.job_id;
                let _ = blocking(move || store.update_job(&id, Some(logs), |_| true)).await;
                Err(AttemptFailure {
                    outcome: Some(result.outcome),
                    error: message,
                    fuel: result.fuel_used,
                    receipt_id: receipt,
                    undecided: false,
                })
            }
            // The committee did not decide the call while this attempt waited: it may still
            // be decided, so the attempt is not over (see `policy::UNDECIDED`).
            Err(e @ ProgramError::NotAttested { .. }) => Err(AttemptFailure {
                undecided: true,
                ..AttemptFailure::before_the_call(e.to_string())
            }),
            Err(other) => Err(AttemptFailure::before_the_call(other.to_string())),
        }
    }

    async fn fail_attempt(
        &self,
        id: JobId,
        number: u32,
        failure: AttemptFailure,
        cancelled: bool,
    ) -> Option<JobEvent> {
        let AttemptFailure {
            outcome,
            error,
            fuel,
            receipt_id,
            undecided,
        } = failure;
        let config = self.inner.config.clone();
        let store = self.inner.store.clone();
        let now = now_ms();
        let kind = outcome
            .as_ref()
            .map(|o| o.kind().to_string())
            .unwrap_or_else(|| "internal".into());
        let unit: f64 = rand::random();
        let kind = if undecided {
            policy::UNDECIDED.to_string()
        } else {
            kind
        };
        let result = blocking(move || {
            store.update_job(&id, None, |job| {
                if let Some(a) = job.attempts.iter_mut().find(|a| a.number == number) {
                    a.finished_at_ms = Some(now);
                    a.outcome = Some(kind.clone());
                    a.error = Some(error.clone());
                    a.fuel_used = fuel;
                    a.receipt_id = receipt_id;
                }
                job.updated_at_ms = now;
                job.error = Some(error.clone());
                let next = policy::after_failure(
                    &config,
                    outcome.as_ref(),
                    undecided,
                    cancelled || job.cancel_requested,
                    job.attempts.len() as u32,
                    job.max_retries,
                    now,
                    unit,
                );
                job.status = next.status();
                match next {
                    policy::AfterFailure::Cancelled => {
                        job.error = Some("cancelled by request".into());
                    }
                    policy::AfterFailure::Retry { at_ms }
                    | policy::AfterFailure::RetrySameAttempt { at_ms } => {
                        job.next_run_at_ms = Some(at_ms)
                    }
                    policy::AfterFailure::TimedOut | policy::AfterFailure::Failed => {}
                }
                true
            })
        })
        .await;
        match result {
            Ok((job, event)) => {
                let c = &self.inner.counters;
                match job.status {
                    JobStatus::Pending => metrics::add(&c.jobs_retried, 1),
                    JobStatus::Cancelled => metrics::add(&c.jobs_cancelled, 1),
                    JobStatus::TimedOut => metrics::add(&c.jobs_timed_out, 1),
                    JobStatus::Failed => metrics::add(&c.jobs_failed, 1),
                    _ => {}
                }
                event
            }
            Err(e) => {
                tracing::error!("recording the failure of job {id}: {e}");
                None
            }
        }
    }
}

/// What is known of an attempt that did not complete its job.
struct AttemptFailure {
    /// The call's outcome, if it ran.
    outcome: Option<Outcome>,
    error: String,
    fuel: u64,
    receipt_id: Option<onvm_rpc_api::ReceiptId>,
    /// The call was not decided while the attempt waited, and may still be.
    undecided: bool,
}

impl AttemptFailure {
    fn before_the_call(error: String) -> Self {
        Self {
            outcome: None,
            error,
            fuel: 0,
            receipt_id: None,
            undecided: false,
        }
    }
}

/// Marks a job completed by its last attempt's committed call.
fn complete_job(info: &mut JobInfo, receipt: &onvm_rpc_api::program::SignedReceipt, blob: BlobId) {
    let now = now_ms();
    info.status = JobStatus::Completed;
    info.output_blob = Some(blob);
    info.output_size = Some(receipt.receipt.output_len);
    info.receipt_id = Some(receipt.id);
    info.error = None;
    info.updated_at_ms = now;
    info.next_run_at_ms = None;
    if let Some(a) = info.attempts.last_mut() {
        a.finished_at_ms = Some(now);
        a.outcome = Some("ok".into());
        a.fuel_used = receipt.receipt.fuel_used;
        a.receipt_id = Some(receipt.id);
    }
}

/// A signed job names what its caller signed (entrypoint, max_retries and fuel explicitly), the
/// signature verifies over it, and it has not expired.
fn check_job_signature(
    network_id: &str,
    req: &SubmitJob,
    input_hash: Hash32,
    max_retries: u32,
    signed: &onvm_rpc_api::caller::CallSignature,
    now: u64,
) -> Result<(), JobError> {
    use onvm_rpc_api::caller::CallerError;
    let refused = |e: CallerError| JobError::Program(crate::programs::caller_refused(e));
    let (Some(entrypoint), Some(_), Some(fuel)) = (&req.entrypoint, req.max_retries, req.fuel)
    else {
        return Err(refused(CallerError::Missing(
            "an explicit entrypoint, max_retries and fuel (they are signed)",
        )));
    };
    onvm_rpc_api::caller::check_signed_request(
        network_id,
        &req.program_id,
        entrypoint,
        &input_hash,
        &req.request_id,
        &onvm_rpc_api::caller::SignedTerms::job(signed.expires_at_ms, fuel, max_retries),
        signed,
        now,
    )
    .map_err(refused)
}
