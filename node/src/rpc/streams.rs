//! The one way subscriptions are served: follow an append-only log from a cursor, deliver what
//! the subscription picks, never skip or repeat, and end a lagging client with a typed close
//! that says where to resume. Job events and the DAG (nodes, receipts) are such logs.

use std::future::Future;
use std::time::Duration;

use jsonrpsee::SubscriptionSink;
use onvm_rpc_api::JobId;
use onvm_rpc_api::dag::DagNode;
use onvm_rpc_api::jobs::JobEvent;

use crate::dag_log::DagLog;
use crate::jobs::Jobs;
use crate::metrics::{Counters, add};

/// How long a lagging subscriber's typed close may wait for room in its connection buffer.
/// Only that subscription's task waits; nothing else in the node does.
const CLOSE_NOTICE_TIMEOUT: Duration = Duration::from_secs(30);

/// Entries read per batch.
const BATCH: usize = 256;

/// An append-only log a subscription follows.
pub(super) trait Feed: Send {
    type Entry: Send;
    /// Entries with sequence `next` or later, in order, at most a batch; empty when caught up.
    fn read(
        &mut self,
        next: u64,
    ) -> impl Future<Output = Result<Vec<(u64, Self::Entry)>, String>> + Send;
    /// Waits until the log may have grown; false once it never will (the node is stopping).
    fn grown(&mut self) -> impl Future<Output = bool> + Send;
}

/// What a subscription does with one entry.
pub(super) enum Step<T> {
    Skip,
    Send(T),
    /// Send it, then end the subscription with `Close::finished`.
    SendThenFinish(T),
}

/// The typed items that end a subscription, carrying the sequence to resume from.
pub(super) struct Close<T> {
    pub lagged: fn(u64) -> T,
    pub finished: fn(u64) -> T,
}

/// Delivers `pick(entry)` for every entry from sequence `from`, then follows new ones. The
/// feed's wake-up carries no data: every delivery reads the log from the cursor, so a missed or
/// overflowed wake-up loses nothing.
pub(super) async fn follow<F: Feed, T: serde::Serialize>(
    mut sink: SubscriptionSink,
    mut feed: F,
    from: u64,
    lag: Duration,
    mut pick: impl FnMut(u64, F::Entry) -> Step<T> + Send,
    close: Close<T>,
    counters: std::sync::Arc<Counters>,
) {
    add(&counters.subscriptions_opened, 1);
    /// Counts the subscription closed however `follow` returns.
    struct Open(std::sync::Arc<Counters>);
    impl Drop for Open {
        fn drop(&mut self) {
            add(&self.0.subscriptions_closed, 1);
        }
    }
    let open = Open(counters);
    let mut next = from;
    loop {
        loop {
            let batch = match feed.read(next).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("subscription ended: {e}");
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (seq, entry) in batch {
                next = seq + 1;
                let (item, finish) = match pick(seq, entry) {
                    Step::Skip => continue,
                    Step::Send(item) => (item, false),
                    Step::SendThenFinish(item) => (item, true),
                };
                if !deliver(&mut sink, &item, lag, &open.0, || (close.lagged)(seq)).await {
                    return;
                }
                if finish {
                    notify(&mut sink, &(close.finished)(next)).await;
                    return;
                }
            }
        }
        tokio::select! {
            _ = sink.closed() => return,
            more = feed.grown() => if !more { return },
        }
    }
}

/// Sends one stream item, waiting for room in the client's connection buffer at most `lag`.
/// A client that makes no progress for that long has fallen behind: its subscription ends with
/// a typed close carrying the cursor to resume from (delivered when it reads again), and this
/// reports false. Only this subscription's task ever waits; the node and other clients do not.
async fn deliver<T: serde::Serialize>(
    sink: &mut SubscriptionSink,
    item: &T,
    lag: Duration,
    counters: &Counters,
    lagged: impl FnOnce() -> T,
) -> bool {
    let Ok(msg) = jsonrpsee::core::to_json_raw_value(item) else {
        return false;
    };
    let started = std::time::Instant::now();
    let sent = sink.send_timeout(msg, lag).await.is_ok();
    counters
        .timings
        .subscription_send
        .observe(started.elapsed());
    if sent {
        return true;
    }
    if !sink.is_closed() {
        add(&counters.subscriptions_lagged, 1);
        notify(sink, &lagged()).await;
    }
    false
}

async fn notify<T: serde::Serialize>(sink: &mut SubscriptionSink, close: &T) {
    if let Ok(msg) = jsonrpsee::core::to_json_raw_value(close) {
        let _ = sink.send_timeout(msg, CLOSE_NOTICE_TIMEOUT).await;
    }
}

/// Job events, of one job or of all.
pub(super) struct JobFeed {
    jobs: Jobs,
    job: Option<JobId>,
    live: tokio::sync::broadcast::Receiver<JobEvent>,
}

impl JobFeed {
    /// Subscribes to the wake-up before anything is read, so nothing falls in between.
    pub fn new(jobs: Jobs, job: Option<JobId>) -> Self {
        let live = jobs.subscribe_live();
        Self { jobs, job, live }
    }
}

impl Feed for JobFeed {
    type Entry = JobEvent;

    async fn read(&mut self, next: u64) -> Result<Vec<(u64, JobEvent)>, String> {
        let events = self
            .jobs
            .events_from(self.job, next, BATCH)
            .await
            .map_err(|e| format!("job events: {e}"))?;
        Ok(events.into_iter().map(|e| (e.seq, e)).collect())
    }

    async fn grown(&mut self) -> bool {
        !matches!(
            self.live.recv().await,
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        )
    }
}

/// The DAG in arrival order.
pub(super) struct DagFeed {
    dag: DagLog,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl DagFeed {
    pub fn new(dag: DagLog) -> Self {
        let changes = dag.changes();
        Self { dag, changes }
    }
}

impl Feed for DagFeed {
    type Entry = DagNode;

    async fn read(&mut self, next: u64) -> Result<Vec<(u64, DagNode)>, String> {
        let dag = self.dag.clone();
        let after = next.saturating_sub(1);
        tokio::task::spawn_blocking(move || dag.after(after, BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("DAG log: {e}"))
    }

    async fn grown(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}
