//! Durable jobs: wire types of the `job_*` API and the job id rule.

use serde::{Deserialize, Serialize};

use crate::hash32::Hash32;
use crate::ids::{BlobId, JobId, ProgramId, ReceiptId};
use crate::types::Base64Bytes;

pub const JOB_ID_TAG: &[u8] = b"onvm/job-id/v1";
/// Tag of the id of a signed caller's job (version 2 binds the caller).
pub const SIGNED_JOB_ID_TAG: &[u8] = b"onvm/job-id/v2";

/// `job` + BLAKE3 of a tag, the program id, the caller (signed jobs only) and the request id:
/// resubmitting a request id finds the same job, and a signed caller's request ids are its
/// own, so another caller reusing one gets another job instead of the first caller's.
/// Anonymous jobs (`caller` zero) keep version 1, which names no caller: any anonymous client
/// that knows a request id reaches its job.
pub fn job_id(program: &ProgramId, caller: &Hash32, request_id: &str) -> JobId {
    let mut h = blake3::Hasher::new();
    if *caller == Hash32::ZERO {
        h.update(JOB_ID_TAG).update(program.as_bytes());
    } else {
        h.update(SIGNED_JOB_ID_TAG)
            .update(program.as_bytes())
            .update(&caller.0);
    }
    h.update(&(request_id.len() as u64).to_le_bytes())
        .update(request_id.as_bytes());
    JobId::from_bytes(*h.finalize().as_bytes())
}

/// The request id of one attempt of a job: each attempt is its own call, committed at most once.
pub fn attempt_request_id(job: &JobId, attempt: u32) -> String {
    format!("job:{job}:{attempt}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
        }
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => JobStatus::Pending,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "timed_out" => JobStatus::TimedOut,
            other => {
                return Err(format!(
                    "unknown status `{other}` (pending, running, completed, failed, cancelled, timed_out)"
                ));
            }
        })
    }
}

/// `job_submit` parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub program_id: ProgramId,
    /// The client's idempotency key (1..=128 bytes).
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_base64: Option<Base64Bytes>,
    /// Input stored as a blob instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_blob: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Retries after the first attempt; default `jobs.default_max_retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Wall-clock limit of each attempt in ms; default and cap `vm.max_call_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Free-form client data kept with the job (at most 4 KiB of JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Run the job's attempts as a caller (`caller::sign_job`): needs `entrypoint` and
    /// `max_retries`, which are signed. Absent: the attempts are anonymous calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::caller::CallSignature>,
}

/// One execution attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAttempt {
    pub number: u32,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// The call outcome kind (`ok`, `trap`, `out_of_fuel`, `timeout`, `cancelled`, ...).
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub fuel_used: u64,
    pub receipt_id: Option<ReceiptId>,
}

/// Where a job stands (`job_status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job_id: JobId,
    pub program_id: ProgramId,
    pub request_id: String,
    pub input_hash: Hash32,
    pub input_size: u64,
    /// The input, stored as a blob.
    pub input_blob: BlobId,
    pub entrypoint: Option<String>,
    pub status: JobStatus,
    pub max_retries: u32,
    pub timeout_ms: u64,
    pub fuel: u64,
    pub metadata: Option<serde_json::Value>,
    pub attempts: Vec<JobAttempt>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// When a pending job may next run (retries wait for their backoff).
    pub next_run_at_ms: Option<u64>,
    /// The last error, for failed / timed out / cancelled jobs.
    pub error: Option<String>,
    pub output_blob: Option<BlobId>,
    pub output_size: Option<u64>,
    pub receipt_id: Option<ReceiptId>,
    pub cancel_requested: bool,
    /// The caller's signature of a signed job (its attempts run as that caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::caller::CallSignature>,
}

/// `job_submit` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResult {
    pub job: JobInfo,
    /// False when the request id was seen before and this is the existing job.
    pub created: bool,
}

/// `job_output` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    pub job_id: JobId,
    pub output_blob: BlobId,
    pub size: u64,
    /// The bytes, when at most `blobs.max_inline_bytes`; otherwise read `output_blob`.
    pub output_base64: Option<Base64Bytes>,
}

/// `job_logs` result: what the program logged, per attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogs {
    pub job_id: JobId,
    pub attempts: Vec<AttemptLogs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLogs {
    pub attempt: u32,
    pub lines: Vec<String>,
    pub truncated: bool,
}

/// `job_list` filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<ProgramId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub items: Vec<JobInfo>,
    pub next_cursor: Option<String>,
}

/// One change of a job, persisted with a node-wide sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Node-wide, gap-free, increasing. Resume a subscription with `from_seq = seq + 1`.
    pub seq: u64,
    pub job_id: JobId,
    pub program_id: ProgramId,
    pub status: JobStatus,
    pub attempt: u32,
    pub fuel_used: u64,
    pub error: Option<String>,
    pub at_ms: u64,
}

/// What a job subscription delivers: events, then possibly a typed close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobStreamItem {
    Event(JobEvent),
    /// The subscription ends. `reason` is `lagged` (the client did not keep up) or
    /// `finished` (a single-job subscription saw a terminal status). Resubscribe with
    /// `from_seq = resume_from_seq` to continue without missing events.
    Closed {
        reason: String,
        resume_from_seq: u64,
    },
}
