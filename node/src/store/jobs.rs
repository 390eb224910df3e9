//! Job tables: the durable queue, the request-id index, the persisted event log and logs.
//! Records are JSON (they are never hashed or signed, and carry free-form metadata).

use onvm_rpc_api::dag::{DagPayload, SubmittedJob};
use onvm_rpc_api::jobs::{
    AttemptLogs, JobAttempt, JobEvent, JobFilter, JobInfo, JobLogs, JobStatus,
};
use onvm_rpc_api::program::SignedReceipt;
use onvm_rpc_api::{Hash32, JobId, ProgramId};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::dag::{self, DagAuthor};
use super::{Store, StoreError};

/// Job id -> JobInfo (JSON).
const JOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("jobs");
/// next_run_at_ms (big endian) ++ job id -> (): pending jobs in the order they are due.
const JOB_QUEUE: TableDefinition<&[u8; 40], ()> = TableDefinition::new("job_queue");
/// Request key -> job id: idempotency across the node. The key is the request id of an
/// anonymous job, and `<caller hex>/<request id>` of a signed one: a signed caller's request
/// ids are its own ([`request_key`]).
const JOB_REQUESTS: TableDefinition<&str, &[u8; 32]> = TableDefinition::new("job_requests");

/// The key of `job`'s request id in `JOB_REQUESTS`.
fn request_key(job: &JobInfo) -> String {
    match &job.signed {
        Some(signed) => format!("{}/{}", signed.caller, job.request_id),
        None => job.request_id.clone(),
    }
}
/// Sequence number -> JobEvent (JSON). Sequence numbers start at 1, without gaps.
const JOB_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("job_events");
/// Job id ++ sequence number (big endian) -> (): one job's events.
const JOB_EVENTS_BY_JOB: TableDefinition<&[u8; 40], ()> = TableDefinition::new("job_events_by_job");
/// Job id -> JobLogs (JSON).
const JOB_LOGS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("job_logs");

/// Applied to a job record inside a call's commit transaction.
pub type JobUpdate = Box<dyn FnOnce(&mut JobInfo, &SignedReceipt) + Send>;

/// A job completion committed atomically with the call's state writes.
pub struct JobCommit {
    pub job_id: JobId,
    pub update: JobUpdate,
    pub logs: Option<AttemptLogs>,
}

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(JOBS)?;
    tx.open_table(JOB_QUEUE)?;
    tx.open_table(JOB_REQUESTS)?;
    tx.open_table(JOB_EVENTS)?;
    tx.open_table(JOB_EVENTS_BY_JOB)?;
    tx.open_table(JOB_LOGS)?;
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::JobDecode(e.to_string()))
}

fn queue_key(at_ms: u64, id: &JobId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn event_key(id: &JobId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(id.as_bytes());
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn load(tx: &WriteTransaction, id: &JobId) -> Result<Option<JobInfo>, StoreError> {
    let jobs = tx.open_table(JOBS)?;
    let v = jobs.get(id.as_bytes())?;
    v.map(|v| from_json(v.value())).transpose()
}

/// Writes `after`, keeps the queue in step, and records an event if the status or attempt moved.
fn save(
    tx: &WriteTransaction,
    author: Option<&DagAuthor>,
    before: Option<&JobInfo>,
    after: &JobInfo,
) -> Result<Option<JobEvent>, StoreError> {
    tx.open_table(JOBS)?
        .insert(after.job_id.as_bytes(), to_json(after).as_slice())?;
    let mut queue = tx.open_table(JOB_QUEUE)?;
    if let Some(b) = before
        && b.status == JobStatus::Pending
    {
        queue.remove(&queue_key(b.next_run_at_ms.unwrap_or(0), &b.job_id))?;
    }
    if after.status == JobStatus::Pending {
        queue.insert(
            &queue_key(after.next_run_at_ms.unwrap_or(0), &after.job_id),
            (),
        )?;
    }
    let moved = match before {
        None => true,
        Some(b) => b.status != after.status || b.attempts.len() != after.attempts.len(),
    };
    if !moved {
        return Ok(None);
    }
    let became_terminal =
        after.status.is_terminal() && before.is_none_or(|b| b.status != after.status);
    if before.is_none() {
        dag::append(tx, author, submitted_payload(after))?;
    } else if became_terminal {
        dag::append(tx, author, changed_payload(after))?;
    }
    record_event(tx, after).map(Some)
}

/// Longest error text a DAG node carries (the full text stays in the home's job record).
const MAX_DAG_ERROR: usize = 512;

fn clip(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| {
        let mut end = s.len().min(MAX_DAG_ERROR);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    })
}

fn submitted_payload(job: &JobInfo) -> DagPayload {
    DagPayload::JobSubmitted {
        job: Box::new(SubmittedJob {
            job_id: job.job_id,
            program_id: job.program_id,
            request_id: job.request_id.clone(),
            input_blob: job.input_blob,
            input_hash: job.input_hash,
            input_size: job.input_size,
            entrypoint: job.entrypoint.clone(),
            max_retries: job.max_retries,
            timeout_ms: job.timeout_ms,
            fuel: job.fuel,
            metadata_json: job.metadata.as_ref().map(|m| m.to_string()),
            created_at_ms: job.created_at_ms,
            signed: job.signed.clone(),
        }),
    }
}

fn changed_payload(job: &JobInfo) -> DagPayload {
    DagPayload::JobStateChanged {
        job_id: job.job_id,
        status: job.status,
        attempts: job
            .attempts
            .iter()
            .map(|a| JobAttempt {
                error: clip(&a.error),
                ..a.clone()
            })
            .collect(),
        error: clip(&job.error),
        output_blob: job.output_blob,
        output_size: job.output_size,
        receipt_id: job.receipt_id,
    }
}

/// Appends the job's current status to the event log (what `job_subscribe` streams).
fn record_event(tx: &WriteTransaction, after: &JobInfo) -> Result<JobEvent, StoreError> {
    let mut events = tx.open_table(JOB_EVENTS)?;
    let seq = events.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
    let last = after.attempts.last();
    let event = JobEvent {
        seq,
        job_id: after.job_id,
        program_id: after.program_id,
        status: after.status,
        attempt: after.attempts.len() as u32,
        fuel_used: last.map(|a| a.fuel_used).unwrap_or(0),
        error: after.error.clone(),
        at_ms: after.updated_at_ms,
    };
    events.insert(seq, to_json(&event).as_slice())?;
    tx.open_table(JOB_EVENTS_BY_JOB)?
        .insert(&event_key(&after.job_id, seq), ())?;
    Ok(event)
}

/// Applies a job operation authored by `author` on another node: the job's record appears (and
/// later reaches its final status) here too, so `job_status`, `job_output` and job events work
/// on every node. Replicated jobs never enter this node's queue: only the home runs them.
pub(super) fn apply_replicated(
    tx: &WriteTransaction,
    author: &Hash32,
    payload: &DagPayload,
) -> Result<Option<JobEvent>, StoreError> {
    // Jobs are run by the program's sequencer: its home, or, for a committee, a member that
    // took over while the home was down (job failover).
    let may_run = |program: &ProgramId| -> Result<bool, StoreError> {
        let programs = tx.open_table(super::PROGRAMS)?;
        match super::require_program(&programs, program) {
            Ok(record) => {
                let m = &record.manifest.manifest;
                Ok(m.deployer == *author
                    || (m.committee.len() > 1
                        && m.committee.iter().any(|c| c.endpoint_id == *author)))
            }
            // A sequencer holds the program before it accepts jobs, so its chain brings the
            // program first: a job operation for a program nobody deployed is refused.
            Err(StoreError::UnknownProgram(p)) => Err(StoreError::ReplicaRejected(format!(
                "job operation for program {p}, which is not deployed"
            ))),
            Err(e) => Err(e),
        }
    };
    let refuse = |what: String| StoreError::ReplicaRejected(what);
    match payload {
        DagPayload::JobSubmitted { job } => {
            if !may_run(&job.program_id)? {
                return Err(refuse(format!(
                    "job {} was accepted by {author}, which may not run its program's jobs",
                    job.job_id
                )));
            }
            if load(tx, &job.job_id)?.is_some() {
                return Ok(None);
            }
            let info = JobInfo {
                job_id: job.job_id,
                program_id: job.program_id,
                request_id: job.request_id.clone(),
                input_hash: job.input_hash,
                input_size: job.input_size,
                input_blob: job.input_blob,
                entrypoint: job.entrypoint.clone(),
                status: JobStatus::Pending,
                max_retries: job.max_retries,
                timeout_ms: job.timeout_ms,
                fuel: job.fuel,
                metadata: job
                    .metadata_json
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m).ok()),
                attempts: Vec::new(),
                created_at_ms: job.created_at_ms,
                updated_at_ms: job.created_at_ms,
                next_run_at_ms: None,
                error: None,
                output_blob: None,
                output_size: None,
                receipt_id: None,
                cancel_requested: false,
                signed: job.signed.clone(),
            };
            tx.open_table(JOBS)?
                .insert(info.job_id.as_bytes(), to_json(&info).as_slice())?;
            record_event(tx, &info).map(Some)
        }
        DagPayload::JobStateChanged {
            job_id,
            status,
            attempts,
            error,
            output_blob,
            output_size,
            receipt_id,
        } => {
            let mut info =
                load(tx, job_id)?.ok_or_else(|| refuse(format!("job {job_id} is unknown here")))?;
            if !may_run(&info.program_id)? {
                return Err(refuse(format!(
                    "job {job_id} was changed by {author}, which may not run its program's jobs"
                )));
            }
            if info.status.is_terminal() {
                return Ok(None);
            }
            info.status = *status;
            info.attempts = attempts.clone();
            info.error = error.clone();
            info.output_blob = *output_blob;
            info.output_size = *output_size;
            info.receipt_id = *receipt_id;
            info.updated_at_ms = attempts
                .last()
                .and_then(|a| a.finished_at_ms)
                .unwrap_or(info.updated_at_ms);
            tx.open_table(JOBS)?
                .insert(job_id.as_bytes(), to_json(&info).as_slice())?;
            record_event(tx, &info).map(Some)
        }
        _ => Ok(None),
    }
}

fn append_logs(tx: &WriteTransaction, id: &JobId, attempt: AttemptLogs) -> Result<(), StoreError> {
    let mut table = tx.open_table(JOB_LOGS)?;
    let mut logs: JobLogs = match table.get(id.as_bytes())? {
        Some(v) => from_json(v.value())?,
        None => JobLogs {
            job_id: *id,
            attempts: Vec::new(),
        },
    };
    logs.attempts.retain(|a| a.attempt != attempt.attempt);
    logs.attempts.push(attempt);
    table.insert(id.as_bytes(), to_json(&logs).as_slice())?;
    Ok(())
}

pub(super) fn apply_commit(
    tx: &WriteTransaction,
    author: Option<&DagAuthor>,
    job: JobCommit,
    receipt: &SignedReceipt,
) -> Result<JobEvent, StoreError> {
    let before = load(tx, &job.job_id)?.ok_or(StoreError::UnknownJob(job.job_id))?;
    let mut after = before.clone();
    (job.update)(&mut after, receipt);
    if let Some(logs) = job.logs {
        append_logs(tx, &job.job_id, logs)?;
    }
    // A commit always finishes an attempt, so the status moved and there is an event.
    save(tx, author, Some(&before), &after)?.ok_or(StoreError::JobDecode(
        "job commit did not change the job".into(),
    ))
}

impl Store {
    /// Records a new job, or returns the existing one for a repeated request id (idempotent).
    /// A request id reused with another program, input or options is a conflict.
    pub fn submit_job(
        &self,
        job: JobInfo,
        max_queue: u64,
    ) -> Result<(JobInfo, bool, Option<JobEvent>), StoreError> {
        let tx = self.begin_write()?;
        let key = request_key(&job);
        let existing = tx
            .open_table(JOB_REQUESTS)?
            .get(key.as_str())?
            .map(|v| JobId::from_bytes(*v.value()));
        if let Some(existing) = existing {
            let found = load(&tx, &existing)?.ok_or(StoreError::UnknownJob(existing))?;
            let what = if found.program_id != job.program_id {
                Some("program")
            } else if found.input_hash != job.input_hash {
                Some("input")
            } else if found.entrypoint != job.entrypoint {
                Some("entrypoint")
            } else {
                None
            };
            tx.abort()?;
            return match what {
                Some(what) => Err(StoreError::RequestConflict {
                    request_id: job.request_id,
                    existing,
                    what,
                }),
                None => Ok((found, false, None)),
            };
        }
        if tx.open_table(JOB_QUEUE)?.len()? >= max_queue {
            tx.abort()?;
            return Err(StoreError::QueueFull { max: max_queue });
        }
        tx.open_table(JOB_REQUESTS)?
            .insert(key.as_str(), job.job_id.as_bytes())?;
        let event = save(&tx, self.author(), None, &job)?;
        self.commit_dag(tx)?;
        Ok((job, true, event))
    }

    pub fn job(&self, id: &JobId) -> Result<Option<JobInfo>, StoreError> {
        let tx = self.begin_read()?;
        let jobs = tx.open_table(JOBS)?;
        let v = jobs.get(id.as_bytes())?;
        v.map(|v| from_json(v.value())).transpose()
    }

    /// Applies `f` to a job in one transaction (with its queue entry and event). `f` returns
    /// false to leave the job untouched.
    pub fn update_job(
        &self,
        id: &JobId,
        logs: Option<AttemptLogs>,
        f: impl FnOnce(&mut JobInfo) -> bool,
    ) -> Result<(JobInfo, Option<JobEvent>), StoreError> {
        let tx = self.begin_write()?;
        let before = load(&tx, id)?.ok_or(StoreError::UnknownJob(*id))?;
        let mut after = before.clone();
        if !f(&mut after) {
            tx.abort()?;
            return Ok((before, None));
        }
        if let Some(l) = logs {
            append_logs(&tx, id, l)?;
        }
        let event = save(&tx, self.author(), Some(&before), &after)?;
        self.commit_dag(tx)?;
        Ok((after, event))
    }

    /// Pending jobs due at or before `now_ms`, oldest first.
    pub fn due_jobs(&self, now_ms: u64, limit: usize) -> Result<Vec<JobInfo>, StoreError> {
        let tx = self.begin_read()?;
        let queue = tx.open_table(JOB_QUEUE)?;
        let jobs = tx.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in queue.range::<&[u8; 40]>(..)? {
            let (k, _) = entry?;
            let k = k.value();
            let at = u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8]));
            if at > now_ms || out.len() >= limit {
                break;
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[8..]);
            if let Some(v) = jobs.get(&id)? {
                out.push(from_json(v.value())?);
            }
        }
        Ok(out)
    }

    /// When the earliest pending job is due.
    pub fn next_due_at(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.begin_read()?;
        let queue = tx.open_table(JOB_QUEUE)?;
        let first = queue.first()?;
        Ok(first.map(|(k, _)| u64::from_be_bytes(k.value()[..8].try_into().unwrap_or([0; 8]))))
    }

    pub fn pending_job_count(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(JOB_QUEUE)?.len()?)
    }

    /// Jobs ordered by id after `after`, filtered; scans (fine for a node's own job table).
    pub fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<JobInfo>, StoreError> {
        let tx = self.begin_read()?;
        let jobs = tx.open_table(JOBS)?;
        let range = match after {
            Some(a) => jobs.range::<&[u8; 32]>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            ))?,
            None => jobs.range::<&[u8; 32]>(..)?,
        };
        let mut out = Vec::new();
        for entry in range {
            let (_, v) = entry?;
            let job: JobInfo = from_json(v.value())?;
            if filter.status.is_some_and(|s| s != job.status)
                || filter.program_id.is_some_and(|p| p != job.program_id)
            {
                continue;
            }
            out.push(job);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every job in `status` (used at startup to recover interrupted attempts).
    pub fn jobs_with_status(&self, status: JobStatus) -> Result<Vec<JobInfo>, StoreError> {
        let filter = JobFilter {
            status: Some(status),
            program_id: None,
        };
        self.list_jobs(&filter, None, usize::MAX)
    }

    /// Events with `seq >= from_seq`, in order.
    pub fn job_events(&self, from_seq: u64, limit: usize) -> Result<Vec<JobEvent>, StoreError> {
        let tx = self.begin_read()?;
        let events = tx.open_table(JOB_EVENTS)?;
        let mut out = Vec::new();
        for entry in events.range(from_seq..)?.take(limit) {
            let (_, v) = entry?;
            out.push(from_json(v.value())?);
        }
        Ok(out)
    }

    /// One job's events with `seq >= from_seq`, in order.
    pub fn job_events_for(
        &self,
        id: &JobId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, StoreError> {
        let tx = self.begin_read()?;
        let index = tx.open_table(JOB_EVENTS_BY_JOB)?;
        let events = tx.open_table(JOB_EVENTS)?;
        let (lo, hi) = (event_key(id, from_seq), event_key(id, u64::MAX));
        let mut out = Vec::new();
        for entry in index.range::<&[u8; 40]>(&lo..=&hi)?.take(limit) {
            let (k, _) = entry?;
            let seq = u64::from_be_bytes(k.value()[32..].try_into().unwrap_or([0; 8]));
            if let Some(v) = events.get(seq)? {
                out.push(from_json(v.value())?);
            }
        }
        Ok(out)
    }

    /// The newest event's sequence number (0 before the first event).
    pub fn last_job_event_seq(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        let events = tx.open_table(JOB_EVENTS)?;
        let last = events.last()?;
        Ok(last.map(|(k, _)| k.value()).unwrap_or(0))
    }

    pub fn job_logs(&self, id: &JobId) -> Result<JobLogs, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(JOB_LOGS)?;
        let v = table.get(id.as_bytes())?;
        match v {
            Some(v) => from_json(v.value()),
            None => Ok(JobLogs {
                job_id: *id,
                attempts: Vec::new(),
            }),
        }
    }
}
