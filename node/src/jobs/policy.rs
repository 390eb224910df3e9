//! Job policy as pure functions: which failures retry, how long to back off, and what a failed
//! attempt turns a job into. Time and randomness come in as arguments, so the rules are tested
//! without a clock (DESIGN.md §3).

use onvm_rpc_api::jobs::JobStatus;
use onvm_rpc_api::program::Outcome;

use crate::config::JobsConfig;

/// Whether an attempt that ended with `outcome` deserves another try: a wall-clock timeout or
/// a trap may pass next time (a trap can depend on state other calls change); running out of
/// fuel, memory or stack, a bad output or a rejection will not. `None` (the attempt failed
/// before or around the call, e.g. an unreachable committee) retries too.
pub fn retryable(outcome: Option<&Outcome>) -> bool {
    outcome.is_none_or(|o| matches!(o, Outcome::Timeout | Outcome::Trap { .. }))
}

/// The wait before retry number `failures` (1 for the first retry): `retry_base_ms` doubled
/// per earlier failure, capped at `retry_max_ms`, times `jitter` in `[0.75, 1.25)` so the
/// retries of many jobs that failed together do not land together. `unit` is a uniform sample
/// in `[0, 1)` supplied by the caller.
pub fn backoff_ms(config: &JobsConfig, failures: u32, unit: f64) -> u64 {
    let exp = failures.saturating_sub(1).min(30);
    let base = config
        .retry_base_ms
        .saturating_mul(1u64 << exp)
        .min(config.retry_max_ms);
    let jitter = 0.75 + unit.clamp(0.0, 1.0) * 0.5;
    (base as f64 * jitter) as u64
}

/// The `outcome` recorded on an attempt whose call was not decided yet when its wait ended
/// (the committee did not answer in time): the call may still commit, so the job runs that
/// same attempt again, under the same call id, instead of a new one.
pub const UNDECIDED: &str = "undecided";

/// What a failed attempt makes of its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    Cancelled,
    /// Runs again at this time.
    Retry {
        at_ms: u64,
    },
    /// Runs the same attempt (same call id) again at this time: its call may still be decided,
    /// and a new attempt would be a second call that could commit too.
    RetrySameAttempt {
        at_ms: u64,
    },
    TimedOut,
    Failed,
}

impl AfterFailure {
    pub fn status(self) -> JobStatus {
        match self {
            AfterFailure::Cancelled => JobStatus::Cancelled,
            AfterFailure::Retry { .. } | AfterFailure::RetrySameAttempt { .. } => {
                JobStatus::Pending
            }
            AfterFailure::TimedOut => JobStatus::TimedOut,
            AfterFailure::Failed => JobStatus::Failed,
        }
    }
}

/// The transition after attempt number `attempts_made` (1-based count of attempts so far)
/// failed with `outcome`, at `now_ms`; `unit` is the jitter sample for [`backoff_ms`]. A
/// cancellation wins over everything; then an `undecided` attempt (its call may still commit)
/// runs again as itself, whatever `max_retries` says, since it was never a failure of the
/// call; then a retryable failure within `max_retries` retries; an attempt that timed out with
/// no retries left is `timed_out`, anything else `failed`.
#[allow(clippy::too_many_arguments)]
pub fn after_failure(
    config: &JobsConfig,
    outcome: Option<&Outcome>,
    undecided: bool,
    cancelled: bool,
    attempts_made: u32,
    max_retries: u32,
    now_ms: u64,
    unit: f64,
) -> AfterFailure {
    if cancelled {
        AfterFailure::Cancelled
    } else if undecided {
        AfterFailure::RetrySameAttempt {
            at_ms: now_ms.saturating_add(backoff_ms(config, attempts_made, unit)),
        }
    } else if retryable(outcome) && attempts_made <= max_retries {
        AfterFailure::Retry {
            at_ms: now_ms.saturating_add(backoff_ms(config, attempts_made, unit)),
        }
    } else if outcome == Some(&Outcome::Timeout) {
        AfterFailure::TimedOut
    } else {
        AfterFailure::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JobsConfig {
        JobsConfig {
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_last_failure_and_caps_with_bounded_jitter() {
        let c = config();
        assert_eq!(backoff_ms(&c, 1, 0.5), 100);
        assert_eq!(backoff_ms(&c, 2, 0.5), 200);
        assert_eq!(backoff_ms(&c, 3, 0.5), 400);
        assert_eq!(backoff_ms(&c, 10, 0.5), 1_000);
        assert_eq!(backoff_ms(&c, u32::MAX, 0.5), 1_000);
        assert_eq!(backoff_ms(&c, 1, 0.0), 75);
        assert_eq!(backoff_ms(&c, 1, 0.999_999), 124);
        // Out-of-range samples are clamped, never a negative or huge wait.
        assert_eq!(backoff_ms(&c, 1, -3.0), 75);
        assert_eq!(backoff_ms(&c, 1, 7.0), 125);
    }

    #[test]
    fn only_failures_that_may_pass_next_time_retry() {
        assert!(retryable(Some(&Outcome::Timeout)));
        assert!(retryable(None));
        assert!(retryable(Some(&Outcome::Trap {
            kind: "unreachable".into(),
            message: String::new()
        })));
        for o in [
            Outcome::OutOfFuel,
            Outcome::MemoryLimit,
            Outcome::StackOverflow,
            Outcome::Cancelled,
            Outcome::BadOutput {
                message: "x".into(),
            },
            Outcome::Rejected {
                message: "x".into(),
            },
        ] {
            assert!(!retryable(Some(&o)), "{o:?}");
        }
    }

    #[test]
    fn transitions_after_a_failed_attempt() {
        let c = config();
        let timeout = Some(&Outcome::Timeout);
        assert_eq!(
            after_failure(&c, timeout, false, true, 1, 5, 0, 0.5),
            AfterFailure::Cancelled
        );
        assert_eq!(
            after_failure(&c, timeout, false, false, 1, 1, 1_000, 0.5),
            AfterFailure::Retry { at_ms: 1_100 }
        );
        assert_eq!(
            after_failure(&c, timeout, false, false, 2, 1, 1_000, 0.5),
            AfterFailure::TimedOut
        );
        assert_eq!(
            after_failure(&c, Some(&Outcome::OutOfFuel), false, false, 1, 5, 0, 0.5),
            AfterFailure::Failed
        );
        assert_eq!(
            after_failure(&c, None, false, false, 1, 0, 0, 0.5),
            AfterFailure::Failed
        );
        // An undecided attempt runs again as itself, even with no retries left; a cancel
        // still wins.
        assert_eq!(
            after_failure(&c, None, true, false, 3, 0, 1_000, 0.5),
            AfterFailure::RetrySameAttempt { at_ms: 1_400 }
        );
        assert_eq!(
            after_failure(&c, None, true, true, 1, 5, 0, 0.5),
            AfterFailure::Cancelled
        );
    }
}
