//! Process-wide counters. Cheap atomics; `node_metrics` snapshots them by name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Monotonic counters since the node started.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(pub $name: AtomicU64,)*
        }

        impl Counters {
            pub fn snapshot(&self) -> BTreeMap<String, u64> {
                let mut out = BTreeMap::new();
                $(out.insert(stringify!($name).to_string(), self.$name.load(Ordering::Relaxed));)*
                out
            }
        }
    };
}

counters!(
    blobs_added,
    blob_bytes_added,
    blob_reads,
    blob_bytes_read,
    uploads_started,
    uploads_finished,
    uploads_aborted,
    uploads_expired,
    blobs_fetched,
    programs_deployed,
    calls_executed,
    calls_failed,
    calls_interrupted,
    fuel_used,
    jobs_submitted,
    jobs_completed,
    jobs_failed,
    jobs_retried,
    jobs_cancelled,
    jobs_timed_out,
    job_fuel_used,
    attestations_failed,
    attestations_refused,
    proposals_finished,
    calls_deduplicated,
    decisions_refused,
);

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
