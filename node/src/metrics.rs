//! A node's counters and latency histograms: cheap atomics that `node_metrics` snapshots by
//! name and `GET /metrics` renders in Prometheus' text format ([`prometheus_text`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use onvm_rpc_api::methods::METHODS;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Monotonic counters since the node started.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(pub $name: AtomicU64,)*
            /// Latency distributions, rendered only by `GET /metrics`.
            pub timings: Timings,
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
    subscriptions_opened,
    subscriptions_closed,
    subscriptions_lagged,
);

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Upper bounds of the latency buckets, in microseconds: 100 µs to 30 s, roughly ×2.5 apart,
/// which covers a cached read (sub-millisecond) up to a committee call waiting out a view change.
const BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// A fixed-bucket latency histogram (Prometheus' cumulative buckets are computed on render).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket; the last slot counts those above every bound.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let us = self.sum_us.load(Ordering::Relaxed);
        let sum = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Calls of one RPC method: answered, answered with an error, and how long each took.
#[derive(Debug, Default)]
pub struct MethodStats {
    errors: AtomicU64,
    latency: Histogram,
}

/// Latency distributions of a node.
#[derive(Debug)]
pub struct Timings {
    /// Per RPC method, indexed like `onvm_rpc_api::methods::METHODS`.
    rpc: Vec<MethodStats>,
    /// One guest call in the VM (compile excluded), on any path: RPC, job, committee member.
    pub vm_call: Histogram,
    /// How long a subscription notification waited for room in its client's buffer: a client
    /// that reads slowly shows here before it lags out (`subscriptions_lagged`).
    pub subscription_send: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            rpc: METHODS.iter().map(|_| MethodStats::default()).collect(),
            vm_call: Histogram::default(),
            subscription_send: Histogram::default(),
        }
    }
}

impl Timings {
    /// Records one answered call of the method at `index` in `METHODS` (None, an unknown
    /// name, is not recorded: it never reaches a handler).
    pub fn rpc_call(&self, index: Option<usize>, elapsed: Duration, failed: bool) {
        if let Some(stats) = index.and_then(|i| self.rpc.get(i)) {
            stats.latency.observe(elapsed);
            if failed {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A `node_metrics` snapshot and the histograms in Prometheus' text exposition format
/// (version 0.0.4): counters as `onvm_<name>_total`, gauges as `onvm_<name>`, histograms in
/// seconds.
pub fn prometheus_text(snapshot: &onvm_rpc_api::types::Metrics, timings: &Timings) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(
        out,
        "# HELP onvm_uptime_seconds Seconds since the node started."
    );
    let _ = writeln!(out, "# TYPE onvm_uptime_seconds gauge");
    let _ = writeln!(out, "onvm_uptime_seconds {}", snapshot.uptime_secs);
    for (name, value) in &snapshot.counters {
        let _ = writeln!(out, "# TYPE onvm_{name}_total counter");
        let _ = writeln!(out, "onvm_{name}_total {value}");
    }
    for (name, value) in &snapshot.gauges {
        let _ = writeln!(out, "# TYPE onvm_{name} gauge");
        let _ = writeln!(out, "onvm_{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP onvm_rpc_call_duration_seconds JSON-RPC calls by method, from admission to answer (batched calls are not included)."
    );
    let _ = writeln!(out, "# TYPE onvm_rpc_call_duration_seconds histogram");
    for (spec, stats) in METHODS.iter().zip(&timings.rpc) {
        if stats.latency.count.load(Ordering::Relaxed) > 0 {
            let labels = format!("method=\"{}\"", spec.name);
            stats
                .latency
                .render(&mut out, "onvm_rpc_call_duration_seconds", &labels);
        }
    }
    let _ = writeln!(
        out,
        "# HELP onvm_rpc_call_errors_total JSON-RPC calls by method answered with an error."
    );
    let _ = writeln!(out, "# TYPE onvm_rpc_call_errors_total counter");
    for (spec, stats) in METHODS.iter().zip(&timings.rpc) {
        if stats.latency.count.load(Ordering::Relaxed) > 0 {
            let errors = stats.errors.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "onvm_rpc_call_errors_total{{method=\"{}\"}} {errors}",
                spec.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP onvm_vm_call_duration_seconds Guest calls run in the VM, on every path."
    );
    let _ = writeln!(out, "# TYPE onvm_vm_call_duration_seconds histogram");
    timings
        .vm_call
        .render(&mut out, "onvm_vm_call_duration_seconds", "");
    let _ = writeln!(
        out,
        "# HELP onvm_subscription_send_wait_seconds How long a notification waited for room in its subscriber's buffer."
    );
    let _ = writeln!(out, "# TYPE onvm_subscription_send_wait_seconds histogram");
    timings
        .subscription_send
        .render(&mut out, "onvm_subscription_send_wait_seconds", "");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{m=\"a\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{m=\"a\"} 60.003050\n"), "{out}");
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        let timings = Timings::default();
        let index = |name: &str| METHODS.iter().position(|m| m.name == name);
        timings.rpc_call(index("node_info"), Duration::from_millis(1), false);
        timings.rpc_call(index("program_execute"), Duration::from_millis(20), true);
        timings.rpc_call(index("no_such_method"), Duration::from_millis(1), true);
        let counters = Counters::default();
        add(&counters.calls_executed, 7);
        let snapshot = onvm_rpc_api::types::Metrics {
            uptime_secs: 3,
            counters: counters.snapshot(),
            gauges: BTreeMap::from([("peers_connected".to_string(), 2)]),
        };
        let text = prometheus_text(&snapshot, &timings);
        for line in text.lines() {
            let sample = line.rsplit_once(' ').is_some_and(|(name, value)| {
                !name.is_empty() && (value.parse::<f64>().is_ok() || value == "+Inf")
            });
            assert!(line.starts_with("# ") || sample, "bad line: {line}");
        }
        assert!(text.contains("onvm_calls_executed_total 7\n"));
        assert!(text.contains("onvm_peers_connected 2\n"));
        assert!(text.contains("onvm_rpc_call_errors_total{method=\"program_execute\"} 1\n"));
        assert!(text.contains("onvm_rpc_call_duration_seconds_count{method=\"node_info\"} 1\n"));
        assert!(!text.contains("no_such_method"));
        assert!(
            !text.contains("method=\"blob_put\""),
            "methods never called are left out"
        );
    }
}
